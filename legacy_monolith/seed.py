"""Deterministic sample data: the same catalogue, users and orders on every run.

Names mix adjectives, materials and per-category nouns so that `q=lamp`, `q=steel` or a
category filter give varied, overlapping results; a few fixed products carry `%`, `_`,
quotes and non-ASCII letters for the contract tests. Seeding refuses to touch a database
that already has categories, so running it twice changes nothing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from legacy_monolith.models import Category, Order, OrderItem, Product, User

RANDOM_SEED = 20250101
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)

CATEGORIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "lighting": ("Lighting", ("Desk Lamp", "Floor Lamp", "Pendant Light", "Wall Sconce")),
    "furniture": ("Furniture", ("Chair", "Stool", "Bookshelf", "Side Table", "Bench")),
    "kitchen": ("Kitchen", ("Saucepan", "Knife Set", "Cutting Board", "Kettle", "Mug")),
    "garden": ("Garden", ("Planter", "Watering Can", "Trowel", "Solar Garden Lamp")),
    "tools": ("Tools", ("Hammer", "Wrench", "Screwdriver Set", "Spirit Level", "Clamp")),
    "office": ("Office", ("Notebook", "Pen Holder", "Monitor Stand", "Stapler", "Desk Tray")),
    "bath": ("Bath", ("Towel Rail", "Soap Dish", "Bath Mat", "Mirror", "Shower Caddy")),
    "outdoor": ("Outdoor", ("Tent", "Camping Stove", "Hammock", "Head Lamp", "Cooler Box")),
    "textiles": ("Textiles", ("Throw", "Cushion Cover", "Curtain", "Rug", "Table Runner")),
    "storage": ("Storage", ("Storage Box", "Basket", "Shelf Unit", "Coat Rack", "Jar")),
    "electronics": ("Electronics", ("Speaker", "Charger", "Desk Fan", "LED Strip", "Lamp Timer")),
    "decor": ("Decor", ("Vase", "Picture Frame", "Wall Clock", "Candle Holder", "Lamp Shade")),
}
ADJECTIVES = (
    "Compact", "Classic", "Modern", "Rustic", "Minimal", "Folding",
    "Heavy-Duty", "Vintage", "Nordic", "Industrial", "Deluxe", "Mini",
)  # fmt: skip
MATERIALS = (
    "Steel", "Stainless Steel", "Oak", "Walnut", "Brass", "Copper", "Ceramic", "Glass",
    "Linen", "Wool", "Bamboo", "Aluminium", "Concrete", "Rattan", "Marble", "Cast Iron",
)  # fmt: skip
FEATURES = (
    "Pairs well with a reading lamp.",
    "Rust-resistant finish.",
    "Hand-finished in small batches.",
    "Dishwasher safe.",
    "Weatherproof for outdoor use.",
    "Ships flat-packed; no tools needed.",
    "Includes a two-year guarantee.",
    "Made from recycled steel offcuts.",
    "Easy to wipe clean.",
    "Designed in Copenhagen.",
)
SPECIAL_PRODUCTS = (  # (category, name, description)
    ("textiles", "100% Linen Throw", "Pure linen; 100% natural fibre."),
    ("tools", "Tool_Box Organiser", "Snake_case labels for every compartment."),
    ("lighting", "Kid's Desk Lamp", "A lamp that's safe for children's rooms."),
    ("decor", '12" Wall Clock', 'A 12" dial with a "silent" sweep movement.'),
    ("kitchen", "Café Crème Mug", "Holds a grand crème; microwave safe."),
    ("lighting", "Über Lamp", "Ünique and über-bright."),
    ("textiles", "Ærø Wool Rug", "Woven on the island of Ærø."),
    ("kitchen", "日本 Ceramic Tea Bowl", "Glazed ceramic from 日本, for matcha."),
    ("storage", "Back\\slash Shelf", "A shelf with a slanted \\ profile."),
)
USERS = (  # (username, roles)
    ("alice", "admin,customer"),
    ("bob", "customer"),
    ("carol", "customer"),
)


@dataclass(frozen=True)
class SeedReport:
    created: bool
    categories: int
    products: int
    users: int
    orders: int


def _catalogue(rng: random.Random, categories: dict[str, Category], count: int) -> list[Product]:
    rows = list(SPECIAL_PRODUCTS)
    slugs = list(CATEGORIES)
    while len(rows) < count:
        slug = rng.choice(slugs)
        adjective, material = rng.choice(ADJECTIVES), rng.choice(MATERIALS)
        noun = rng.choice(CATEGORIES[slug][1])
        text = f"A {adjective.lower()} {noun.lower()} in {material.lower()}. {rng.choice(FEATURES)}"
        rows.append((slug, f"{adjective} {material} {noun}", text))
    return [
        Product(
            name=name,
            description=text,
            price_cents=rng.randint(199, 49_999),
            category=categories[slug],
            stock=rng.randint(0, 250),
            updated_at=EPOCH + timedelta(minutes=index),
        )
        for index, (slug, name, text) in enumerate(rows[:count])
    ]


def _orders(rng: random.Random, users: list[User], products: list[Product]) -> list[Order]:
    orders = []
    for index in range(4 * len(users)):
        order = Order(
            user=users[index % len(users)],
            created_at=EPOCH + timedelta(days=1, hours=index),
            status=rng.choice(("paid", "shipped", "delivered")),
            total_cents=0,
        )
        for product in rng.sample(products, rng.randint(1, min(3, len(products)))):
            quantity = rng.randint(1, 3)
            order.items.append(
                OrderItem(product=product, quantity=quantity, price_cents=product.price_cents)
            )
            order.total_cents += product.price_cents * quantity
        orders.append(order)
    return orders


def seed(session: Session, products: int) -> SeedReport:
    """Fill an empty, migrated database; leave a non-empty one alone."""
    if session.scalar(select(func.count()).select_from(Category)):
        return SeedReport(False, *_counts(session))
    rng = random.Random(RANDOM_SEED)
    categories = {slug: Category(slug=slug, name=name) for slug, (name, _) in CATEGORIES.items()}
    users = [
        User(username=name, email=f"{name}@example.com", roles=roles, created_at=EPOCH)
        for name, roles in USERS
    ]
    catalogue = _catalogue(rng, categories, products)
    orders = _orders(rng, users, catalogue) if catalogue else []
    session.add_all([*categories.values(), *users, *catalogue, *orders])
    session.flush()
    return SeedReport(True, *_counts(session))


def _counts(session: Session) -> tuple[int, ...]:
    models = (Category, Product, User, Order)
    return tuple(session.scalar(select(func.count()).select_from(m)) or 0 for m in models)
