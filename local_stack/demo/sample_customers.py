"""A generator of realistic, dirty CRM customer exports (fixed seed, so reproducible).

Modelled on what a European CRM writes: `;` as delimiter, German header spellings, dates as
`DD.MM.YYYY` or ISO, local timestamps without an offset (Europe/Berlin), `ja`/`nein` booleans,
thousands separators in credit limits. Every kind of dirt the customers contract handles
appears: stray whitespace, lower-case country codes and segments, invalid emails, blank
optional fields, negative points, a time that happens twice when the clocks go back, exact
duplicate rows, and customers re-exported the next day with changes and a later timestamp.
Customer ids are those the order sample uses (CUST-0001 ... CUST-0499), so the two join.
"""

from __future__ import annotations

import csv
import io
import random
from datetime import date, datetime, timedelta

FIRST = ["Anna", "Ben", "Clara", "David", "Emma", "Felix", "Greta", "Hugo", "Ida", "Jonas", "Lea", "Zoë", "Émile"]
LAST = ["Müller", "Schmidt", "Meyer", "Weber", "Fischer", "Dubois", "Rossi", "Jansen", "Nowak", "García", "Smith"]
COUNTRIES = ["DE", "DE", "DE", "AT", "CH", "FR", "NL", "BE", "IT", "ES", "PL", "GB", "US"]
REGIONS = ["North", "South", "East", "West", "Central"]
HEADERS = [
    [
        "customer_id",
        "full_name",
        "email",
        "country",
        "region",
        "segment",
        "signup_date",
        "marketing_opt_in",
        "credit_limit",
        "loyalty_points",
        "updated_at",
    ],
    [
        "Kundennummer",
        "Name",
        "E-Mail",
        "Land",
        "Sales Region",
        "Type",
        "Registered",
        "Newsletter",
        "Limit",
        "Points",
        "Geaendert",
    ],
]


def _customer(rng: random.Random, number: int, day: date) -> list[str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    name = rng.choice([f"{first} {last}", f"  {first}  {last} ", f"{first} {last}"])
    local = f"{first}.{last}".lower().replace("ü", "ue").replace("ë", "e").replace("é", "e").replace("í", "i")
    email = rng.choice([f"{local}@example.com", f"{local}@example.de", f"{local}@example.de", ""])
    signup = date(2020, 1, 1) + timedelta(days=rng.randrange(2000))
    signup_text = signup.isoformat() if rng.random() < 0.5 else signup.strftime("%d.%m.%Y")
    limit_cents = rng.randrange(0, 2_000_000)
    limit = f"{limit_cents // 100}.{limit_cents % 100:02d}"
    if limit_cents >= 100_000 and rng.random() < 0.3:
        limit = f"{limit_cents // 100:,}.{limit_cents % 100:02d}"
    updated = datetime(day.year, day.month, day.day) - timedelta(seconds=rng.randrange(86_400))
    return [
        f"CUST-{number:04d}",
        name,
        email,
        rng.choice(COUNTRIES).lower() if rng.random() < 0.1 else rng.choice(COUNTRIES),
        rng.choice([*REGIONS, ""]),
        rng.choice(["Consumer", "Business", "business", "consumer", ""]),
        signup_text if rng.random() > 0.05 else "",
        rng.choice(["ja", "nein", "yes", "no", "1", "0", ""]),
        limit if rng.random() > 0.1 else "",
        str(rng.randrange(0, 5000)),
        updated.strftime("%Y-%m-%d %H:%M:%S") if rng.random() < 0.6 else updated.strftime("%d.%m.%Y %H:%M"),
    ]


def _dirty(rng: random.Random, row: list[str]) -> list[str]:
    """Break one rule of the contract."""
    row = list(row)
    kind = rng.randrange(5)
    if kind == 0:
        row[2] = "not-an-email"
    elif kind == 1:
        row[3] = "Germany"
    elif kind == 2:
        row[9] = "-20"
    elif kind == 3:
        row[7] = "maybe"
    else:
        row[10] = "2026-10-25 02:30:00"  # happens twice in Europe/Berlin: the clocks go back at 03:00
    return row


def generate_day(day: date, customers: int = 120, seed: int = 7) -> dict[str, bytes]:
    """One CRM export for a day: {file name: bytes}. Later days re-export some customers with changes."""
    rng = random.Random(f"{seed}-{day.isoformat()}")
    offset = (day.toordinal() % 4) * 100
    rows = []
    for i in range(customers):
        row = _customer(rng, 1 + (offset + i) % 499, day)
        if rng.random() < 0.05:
            row = _dirty(rng, row)
        rows.append(row)
        if rng.random() > 0.98:
            rows.append(list(row))  # exact duplicate
    header = HEADERS[day.toordinal() % 2]
    buf = io.StringIO()
    csv.writer(buf, delimiter=";", lineterminator="\r\n").writerows([header, *rows])
    return {f"customers_{day:%Y%m%d}.csv": buf.getvalue().encode("utf-8")}


def generate(days: list[date], customers: int = 120, seed: int = 7) -> dict[str, dict[str, bytes]]:
    """Files per day: {day: {name: bytes}}."""
    return {d.isoformat(): generate_day(d, customers, seed) for d in days}
