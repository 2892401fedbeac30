"""A generator of realistic, dirty e-commerce order CSVs (fixed seed, so reproducible).

Every kind of dirt the orders contract handles appears: header aliases and case,
stray whitespace, category spellings, blank customers and categories, timestamps in
every accepted format (and garbage), currency signs and thousands separators, region
case, invalid quantities, prices and regions, blank products, quoted commas, CRLF line
ends, an ignored extra column, exact duplicate rows, re-sent orders with a later
timestamp, and (on the first day) one file without the required `region` column.
"""

from __future__ import annotations

import csv
import io
import random
from datetime import date, datetime, timedelta

PRODUCTS = {
    "Electronics": ["USB-C Cable", "Wireless Mouse", "Laptop Stand", "Noise Cancelling Headphones", "Webcam, 1080p"],
    "Books": ["Data Engineering Handbook", "SQL Pocket Guide", "The Pragmatic Programmer"],
    "Clothing": ["Rain Jacket", "Wool Socks", "Running Shoes"],
    "Home & Garden": ["Garden Hose", "Desk Lamp", "Plant Pot"],
    "Toys": ["Puzzle 1000pc", "Building Blocks"],
    "Sports": ["Yoga Mat", "Water Bottle"],
}
REGIONS = ["North", "South", "East", "West", "Central"]

HEADER_STYLES = [
    ["order_id", "order_ts", "customer_id", "product_name", "category", "quantity", "unit_price", "region"],
    ["Order ID", " Timestamp ", "Customer", "Product", "Category", "Qty", "Price", "REGION"],
    ["ORDER_ID", "order_date", "customer_id", "product", "product_category", "units", "unit price", "Region", "notes"],
]


def _ts_text(rng: random.Random, moment: datetime) -> str:
    style = rng.random()
    if style < 0.4:
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    if style < 0.6:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    if style < 0.7:
        return (moment + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+02:00")
    if style < 0.85:
        return moment.strftime("%m/%d/%Y %H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M")


def _price_text(rng: random.Random, cents: int) -> str:
    value = f"{cents // 100}.{cents % 100:02d}"
    style = rng.random()
    if style < 0.15:
        return f"${cents // 100:,}.{cents % 100:02d}"
    if style < 0.25:
        return f"{cents // 100:,}.{cents % 100:02d}"
    return value


def _row(rng: random.Random, day: date, order_id: str) -> list[str]:
    category = rng.choice(list(PRODUCTS))
    product = rng.choice(PRODUCTS[category])
    moment = datetime(day.year, day.month, day.day) + timedelta(seconds=rng.randrange(86_400))
    cat_text = rng.choice([category, category.upper(), category.lower(), f"  {category} ", category.replace(" ", "  ")])
    if rng.random() < 0.05:
        cat_text = ""
    product_text = rng.choice([product, f" {product} ", product.replace(" ", "   ")])
    customer = "" if rng.random() < 0.05 else f"CUST-{rng.randrange(1, 500):04d}"
    region = rng.choice(REGIONS)
    region_text = rng.choice([region, region.lower(), region.upper(), f" {region}"])
    return [
        order_id,
        _ts_text(rng, moment),
        customer,
        product_text,
        cat_text,
        str(rng.randint(1, 5)),
        _price_text(rng, rng.randrange(99, 250_000)),
        region_text,
    ]


def _dirty(rng: random.Random, row: list[str]) -> list[str]:
    """Break one rule of the contract."""
    row = list(row)
    kind = rng.randrange(6)
    if kind == 0:
        row[1] = rng.choice(["not a date", "2026-13-45 10:00", "yesterday"])
    elif kind == 1:
        row[5] = rng.choice(["0", "-2", "three"])
    elif kind == 2:
        row[6] = rng.choice(["free", "-5.00", "12.345"])
    elif kind == 3:
        row[7] = rng.choice(["Mars", "north-east", ""])
    elif kind == 4:
        row[3] = "   "
    else:
        row[0] = ""
    return row


def generate_day(day: date, files: int = 3, rows_per_file: int = 200, seed: int = 42) -> dict[str, bytes]:
    """The raw CSV files of one day: {file name: bytes}."""
    rng = random.Random(f"{seed}-{day.isoformat()}")
    out: dict[str, bytes] = {}
    previous: list[list[str]] = []
    for f in range(files):
        header = HEADER_STYLES[f % len(HEADER_STYLES)]
        rows: list[list[str]] = []
        for n in range(rows_per_file):
            order_id = f"ORD-{day:%Y%m%d}-{f:02d}{n:05d}"
            row = _row(rng, day, order_id)
            r = rng.random()
            if r < 0.04:
                row = _dirty(rng, row)
            rows.append(row)
            if r > 0.98:
                rows.append(list(row))  # exact duplicate
        if previous:
            # An order of the previous file re-sent with changes at the day's last second: it wins.
            resent = _row(rng, day, next(r[0] for r in previous if r[0]))
            resent[1] = f"{day.isoformat()} 23:59:59"
            rows.append(resent)
        previous = rows
        if len(header) > 8:
            rows = [[*r, rng.choice(["", "gift", "express"])] for r in rows]
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\r\n" if f == 2 else "\n").writerows([header, *rows])
        out[f"orders_{day:%Y%m%d}_{f + 1:02d}.csv"] = buf.getvalue().encode("utf-8")
    return out


def generate(days: list[date], files: int = 3, rows_per_file: int = 200, seed: int = 42) -> dict[str, dict[str, bytes]]:
    """Files per day, plus one contract-breaking file (no `region` column) on the first day."""
    result = {d.isoformat(): generate_day(d, files, rows_per_file, seed) for d in days}
    if days:
        first = days[0]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(HEADER_STYLES[0][:-1])
        rng = random.Random(seed)
        for n in range(20):
            writer.writerow(_row(rng, first, f"ORD-{first:%Y%m%d}-X{n:04d}")[:-1])
        result[first.isoformat()][f"orders_{first:%Y%m%d}_legacy_export.csv"] = buf.getvalue().encode()
    return result
