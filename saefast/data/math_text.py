"""The built-in `math` corpus: mathematical text generated from templates.

Arithmetic (sums, differences, products, quotients, multi-step chains, fractions, percent,
greatest common divisors), algebra (solving linear equations step by step, expanding and
factoring quadratics) and proof-like paragraphs (parity, divisibility, induction) with varied
numbers, variable names and phrasings. Every statement is true: numbers are computed
(`fractions.Fraction` for exact rationals), never typed in.

Deterministic on every machine and Python: document i comes from its own
`random.Random(SEED * 1_000_003 + i)` (an int seed: no hash randomisation), so documents are
generated lazily, one at a time, and a short budget never builds the rest. N_DOCS documents
of ~1,500 characters hold ~3M MiniLM tokens: enough for 1M-token budgets with room for the
held-out slice. ASCII only, so every tokenizer sees the same digits and operators.
"""

from __future__ import annotations

import random
from fractions import Fraction
from math import gcd
from typing import Callable, Iterator

SEED = 0
N_DOCS = 6000
STATEMENTS_PER_DOC = (14, 22)  # a document mixes this many statements of every kind
VERSION = 1  # bump when the text changes (it is also in the corpus fingerprint via the text)

__all__ = ["SEED", "N_DOCS", "iter_math_documents", "math_document"]


def iter_math_documents(n_docs: int = N_DOCS) -> Iterator[str]:
    """The corpus's documents in order, generated one at a time."""
    for i in range(n_docs):
        yield math_document(i)


def math_document(index: int) -> str:
    """Document `index`: paragraphs of statements of mixed kinds."""
    rng = random.Random(SEED * 1_000_003 + index)
    n = rng.randint(*STATEMENTS_PER_DOC)
    parts = [rng.choice(_KINDS)(rng) for _ in range(n)]
    paragraphs, current = [], []
    for part in parts:
        current.append(part)
        if rng.random() < 0.3:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return "\n\n".join(paragraphs)


# ---------------------------------------------------------------------------- helpers


def _frac(q: Fraction) -> str:
    return str(q.numerator) if q.denominator == 1 else f"{q.numerator}/{q.denominator}"


def _signed(c: int, term: str, first: bool = False) -> str:
    """One term of a polynomial with its sign: ('+ 3x', '- x', '3x^2' first)."""
    mag = abs(c)
    body = (term if mag == 1 else f"{mag}{term}") if term else str(mag)
    if first:
        return f"-{body}" if c < 0 else body
    return f"- {body}" if c < 0 else f"+ {body}"


def _poly(coeffs: list[tuple[int, str]]) -> str:
    """'x^2 + 5x + 6' from [(1, 'x^2'), (5, 'x'), (6, '')], zero terms left out."""
    terms = [(c, t) for c, t in coeffs if c != 0]
    if not terms:
        return "0"
    out = [_signed(terms[0][0], terms[0][1], first=True)]
    out += [_signed(c, t) for c, t in terms[1:]]
    return " ".join(out)


def _linear_factor(a: int) -> str:
    """'(x + 3)' for x + a, '(x - 2)' for x - 2, 'x' for a = 0."""
    return "x" if a == 0 else f"(x {'+' if a > 0 else '-'} {abs(a)})"


# ---------------------------------------------------------------------------- arithmetic


def _sum(rng: random.Random) -> str:
    a, b = rng.randint(2, 999), rng.randint(2, 999)
    return rng.choice([
        f"{a} + {b} = {a + b}.",
        f"The sum of {a} and {b} is {a + b}.",
        f"{a} plus {b} equals {a + b}.",
        f"Adding {b} to {a} gives {a + b}, since {a} + {b} = {a + b}.",
        f"What is {a} + {b}? It is {a + b}.",
    ])


def _difference(rng: random.Random) -> str:
    a, b = rng.randint(2, 999), rng.randint(2, 999)
    return rng.choice([
        f"{a} - {b} = {a - b}.",
        f"The difference {a} - {b} is {a - b}.",
        f"{a} minus {b} equals {a - b}.",
        f"Subtracting {b} from {a} leaves {a - b}: {a} - {b} = {a - b}.",
    ])


def _product(rng: random.Random) -> str:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    return rng.choice([
        f"{a} * {b} = {a * b}.",
        f"The product of {a} and {b} is {a * b}.",
        f"{a} times {b} equals {a * b}.",
        f"{a} * {b} = {a * b}, so {a * b} / {b} = {a}.",
    ])


def _quotient(rng: random.Random) -> str:
    b, q = rng.randint(2, 40), rng.randint(2, 60)
    a = b * q
    r = rng.randint(1, b - 1) if b > 2 else 1
    return rng.choice([
        f"{a} / {b} = {q}.",
        f"{a} divided by {b} is {q}.",
        f"Dividing {a} by {b} gives {q}, because {b} * {q} = {a}.",
        f"{a + r} divided by {b} is {q} with remainder {r}, since {b} * {q} + {r} = {a + r}.",
    ])


def _multi_step(rng: random.Random) -> str:
    a, b, c = rng.randint(2, 30), rng.randint(2, 30), rng.randint(2, 30)
    kind = rng.randrange(4)
    if kind == 0:
        return f"{a} + {b} * {c} = {a} + {b * c} = {a + b * c}."
    if kind == 1:
        return f"({a} + {b}) * {c} = {a + b} * {c} = {(a + b) * c}."
    if kind == 2:
        return (f"First compute {a} * {b} = {a * b}, then subtract {c}: "
                f"{a * b} - {c} = {a * b - c}.")
    d = rng.randint(2, 12)
    return (f"({a} - {b}) * ({c} + {d}) = {a - b} * {c + d} = {(a - b) * (c + d)}.")


def _fractions(rng: random.Random) -> str:
    p = Fraction(rng.randint(1, 9), rng.randint(2, 12))
    q = Fraction(rng.randint(1, 9), rng.randint(2, 12))
    kind = rng.randrange(4)
    if kind == 0:  # a common denominator, then the sum
        den = p.denominator * q.denominator // gcd(p.denominator, q.denominator)
        pn, qn = p.numerator * den // p.denominator, q.numerator * den // q.denominator
        return (f"{_frac(p)} + {_frac(q)} = {pn}/{den} + {qn}/{den} = {_frac(p + q)}.")
    if kind == 1:
        return f"{_frac(p)} * {_frac(q)} = {_frac(p * q)}."
    if kind == 2:
        return f"{_frac(p)} - {_frac(q)} = {_frac(p - q)}."
    return f"Dividing {_frac(p)} by {_frac(q)}: {_frac(p)} / ({_frac(q)}) = {_frac(p / q)}."


def _percent(rng: random.Random) -> str:
    pct = rng.choice([5, 10, 12, 15, 20, 25, 30, 40, 50, 60, 75, 80])
    base = rng.randint(1, 40) * (100 // gcd(pct, 100))  # so that the percentage is whole
    value = _frac(Fraction(pct * base, 100))
    return rng.choice([
        f"{pct}% of {base} is {value}.",
        f"Taking {pct} percent of {base} gives {value}.",
    ])


def _gcd(rng: random.Random) -> str:
    g = rng.randint(2, 15)
    a, b = g * rng.randint(2, 20), g * rng.randint(2, 20)
    d = gcd(a, b)
    return rng.choice([
        f"The greatest common divisor of {a} and {b} is {d}.",
        f"Since {a} = {d} * {a // d} and {b} = {d} * {b // d}, and {a // d} and {b // d} share no "
        f"factor, the greatest common divisor of {a} and {b} is {d}.",
    ])


def _squares(rng: random.Random) -> str:
    m, n = rng.randint(2, 9), rng.randint(1, 8)
    if m <= n:
        m, n = n + 1, m
    a, b, c = m * m - n * n, 2 * m * n, m * m + n * n
    return rng.choice([
        f"{a}^2 + {b}^2 = {a * a} + {b * b} = {c * c} = {c}^2, so ({a}, {b}, {c}) is a Pythagorean triple.",
        f"{m}^2 - {n}^2 = ({m} - {n}) * ({m} + {n}) = {m - n} * {m + n} = {m * m - n * n}.",
    ])


# ---------------------------------------------------------------------------- algebra


def _solve_linear(rng: random.Random) -> str:
    a = rng.choice([v for v in range(-9, 10) if v not in (0, 1)])
    x = rng.randint(-20, 20)
    b = rng.randint(-30, 30)
    c = a * x + b
    lhs = _poly([(a, "x"), (b, "")])
    steps = (f"{'Subtract' if b >= 0 else 'Add'} {abs(b)} {'from' if b >= 0 else 'to'} both sides: "
             f"{a}x = {c - b}. Divide both sides by {a}: x = {x}.")
    return rng.choice([
        f"Solve {lhs} = {c} for x. {steps}",
        f"To solve {lhs} = {c}, isolate x. {steps}",
        f"Find x such that {lhs} = {c}. {steps} Check: {a} * ({x}) + ({b}) = {c}.",
    ])


_NONZERO = [v for v in range(-9, 10) if v != 0]
_PRIMES = [p for p in range(11, 200) if all(p % d for d in range(2, int(p ** 0.5) + 1))]


def _expand(rng: random.Random) -> str:
    p, q = rng.choice(_NONZERO), rng.choice(_NONZERO)
    expanded = _poly([(1, "x^2"), (p + q, "x"), (p * q, "")])
    f = f"{_linear_factor(p)}{_linear_factor(q)}"
    return rng.choice([
        f"Expanding, {f} = {expanded}.",
        f"{f} = {expanded}.",
        f"Multiply out {f}: x^2 {_signed(q, 'x')} {_signed(p, 'x')} {_signed(p * q, '')} = {expanded}.",
    ])


def _factor(rng: random.Random) -> str:
    p, q = rng.choice(_NONZERO), rng.choice(_NONZERO)
    poly = _poly([(1, "x^2"), (p + q, "x"), (p * q, "")])
    f = f"{_linear_factor(p)}{_linear_factor(q)}"
    roots = sorted({-p, -q})
    root_text = " and ".join(f"x = {r}" for r in roots)
    return rng.choice([
        f"Factor: {poly} = {f}.",
        f"The quadratic {poly} factors as {f}, so its roots are {root_text}.",
        f"We look for two numbers with sum {p + q} and product {p * q}: they are {p} and {q}, "
        f"so {poly} = {f}.",
    ])


def _difference_of_squares(rng: random.Random) -> str:
    a = rng.randint(1, 12)
    return f"x^2 - {a * a} = (x - {a})(x + {a}), a difference of squares."


# ---------------------------------------------------------------------------- proofs


_VARS = [("n", "k"), ("m", "j"), ("a", "t"), ("p", "r")]


def _even_square(rng: random.Random) -> str:
    n, k = rng.choice(_VARS)
    val = rng.randint(1, 40)
    return rng.choice([
        f"Let {n} be an even integer. Then {n} = 2{k} for some integer {k}, so "
        f"{n}^2 = 4{k}^2 = 2(2{k}^2), which is even.",
        f"Claim: the square of an even number is even. Proof: write {n} = 2{k}. Then "
        f"{n}^2 = (2{k})^2 = 4{k}^2 = 2(2{k}^2), a multiple of 2. For example, "
        f"{2 * val}^2 = {4 * val * val} = 2 * {2 * val * val}.",
    ])


def _odd_square(rng: random.Random) -> str:
    n, k = rng.choice(_VARS)
    val = rng.randint(0, 30)
    o = 2 * val + 1
    return (f"Suppose {n} is odd, so {n} = 2{k} + 1 for an integer {k}. Then "
            f"{n}^2 = 4{k}^2 + 4{k} + 1 = 2(2{k}^2 + 2{k}) + 1, which is odd. With {k} = {val}: "
            f"{o}^2 = {o * o} = 2 * {(o * o - 1) // 2} + 1.")


def _odd_plus_odd(rng: random.Random) -> str:
    (a, j), (b, k) = rng.sample(_VARS, 2)
    x, y = 2 * rng.randint(0, 50) + 1, 2 * rng.randint(0, 50) + 1
    return rng.choice([
        f"The sum of two odd integers is even. Let {a} = 2{j} + 1 and {b} = 2{k} + 1. Then "
        f"{a} + {b} = 2{j} + 2{k} + 2 = 2({j} + {k} + 1), which is even.",
        f"Let {a} and {b} be odd. Writing {a} = 2{j} + 1 and {b} = 2{k} + 1 gives "
        f"{a} + {b} = 2({j} + {k} + 1). For instance {x} + {y} = {x + y} = 2 * {(x + y) // 2}.",
    ])


def _divides(rng: random.Random) -> str:
    a = rng.randint(2, 9)
    m, n = rng.randint(2, 9), rng.randint(2, 9)
    b, c = a * m, a * m * n
    return rng.choice([
        "If a divides b and b divides c, then a divides c. Indeed, b = am and c = bn for "
        "integers m and n, so c = a(mn).",
        f"{a} divides {b}, as {b} = {a} * {m}, and {b} divides {c}, as {c} = {b} * {n}; so "
        f"{a} divides {c}: {c} = {a} * {m * n}.",
    ])


def _induction(rng: random.Random) -> str:
    n = rng.randint(3, 60)
    total = n * (n + 1) // 2
    return rng.choice([
        f"By induction, 1 + 2 + ... + n = n(n + 1)/2 for every positive integer n. "
        f"For n = {n} this gives {n} * {n + 1} / 2 = {total}.",
        f"The base case n = 1 holds since 1 = 1 * 2 / 2. If 1 + ... + n = n(n + 1)/2, then adding "
        f"n + 1 gives (n + 1)(n + 2)/2, which completes the induction. So the first {n} positive "
        f"integers sum to {total}.",
        f"Induction shows 1 + 3 + 5 + ... + (2n - 1) = n^2. With n = {n}, the first {n} odd "
        f"numbers sum to {n * n} = {n}^2.",
    ])


def _prime(rng: random.Random) -> str:
    p = rng.choice(_PRIMES)
    q, r = rng.sample(_PRIMES[:15], 2)
    return rng.choice([
        f"{p} is prime: it has no divisor between 2 and {int(p ** 0.5)}.",
        f"{q * r} is not prime, since {q * r} = {q} * {r}.",
        "There are infinitely many primes. Suppose p_1, ..., p_n were all of them; then "
        "p_1 p_2 ... p_n + 1 has a prime factor that is none of them, a contradiction.",
    ])


_KINDS: list[Callable[[random.Random], str]] = [
    _sum, _difference, _product, _quotient, _multi_step, _fractions, _percent, _gcd, _squares,
    _solve_linear, _expand, _factor, _difference_of_squares,
    _even_square, _odd_square, _odd_plus_odd, _divides, _induction, _prime,
]
