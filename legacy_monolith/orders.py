"""Orders: a caller sees and places only their own."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from legacy_monolith.errors import ApiError
from legacy_monolith.forms import OrderLine, Page
from legacy_monolith.models import Order, OrderItem, Product, User, utcnow


def user_by_username(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise ApiError(401, "unknown_user", f"no user is named {username!r}")
    return user


def list_orders(session: Session, user: User, page: Page) -> tuple[int, Sequence[Order]]:
    mine = Order.user_id == user.id
    total = session.scalar(select(func.count()).select_from(Order).where(mine)) or 0
    orders = session.scalars(
        select(Order).where(mine).order_by(Order.id).limit(page.size).offset(page.offset)
    ).all()
    return total, orders


def place_order(session: Session, user: User, lines: Sequence[OrderLine]) -> Order:
    order = Order(user_id=user.id, status="placed", total_cents=0)
    for line in sorted(lines, key=lambda line: line.product_id):  # one lock order: no deadlock
        price = session.scalar(select(Product.price_cents).where(Product.id == line.product_id))
        if price is None:
            raise ApiError(422, "unknown_product", f"no product has id {line.product_id}")
        # One conditional UPDATE, so two buyers of the last item cannot both succeed.
        taken = session.scalar(
            update(Product)
            .where(Product.id == line.product_id, Product.stock >= line.quantity)
            .values(stock=Product.stock - line.quantity, updated_at=utcnow())
            .returning(Product.id)
        )
        if taken is None:
            raise ApiError(409, "insufficient_stock", f"product {line.product_id} is short")
        order.items.append(
            OrderItem(product_id=line.product_id, quantity=line.quantity, price_cents=price)
        )
        order.total_cents += price * line.quantity
    session.add(order)
    session.flush()
    return order
