"""Sales: revenue, orders, average order value and customers; revenue over time by region and category; top
products. Everything follows the sidebar's dates and regions."""

from __future__ import annotations

import streamlit as st

from dashboard import data
from dashboard.views.common import checked_status, filters

st.title("Sales")
status = checked_status()
start, end, regions = filters(status)
if not regions:
    st.info("Pick at least one region.")
    st.stop()

k = data.kpis(start, end, regions)
st.caption(f"Orders from {start:%Y-%m-%d} to {end:%Y-%m-%d}, regions: {', '.join(regions)}")
cols = st.columns(4)
cols[0].metric("Revenue", f"{k['revenue']:,.2f}")
cols[1].metric("Orders", f"{k['orders']:,}")
cols[2].metric("Average order value", f"{k['avg_order_value']:,.2f}")
cols[3].metric("Customers", f"{k['customers']:,}")

left, right = st.columns(2)
with left:
    st.subheader("Revenue by region")
    by_region = data.revenue_by("region", start, end, regions)
    by_region["order_date"] = by_region["order_date"].astype(str)  # days, not hours, on the axis
    st.line_chart(by_region, x="order_date", y="revenue", color="region")
with right:
    st.subheader("Revenue by category")
    by_category = data.revenue_by("category", start, end, regions)
    by_category["order_date"] = by_category["order_date"].astype(str)  # one bar per day, as wide as the day
    st.bar_chart(by_category, x="order_date", y="revenue", color="category")

st.subheader("Top products")
products = data.top_products(start, end, regions)
st.bar_chart(products, x="product", y="revenue", horizontal=True, sort="-revenue")
money = st.column_config.NumberColumn(format="%.2f")
st.dataframe(products, hide_index=True, width="stretch", column_config={"revenue": money})
