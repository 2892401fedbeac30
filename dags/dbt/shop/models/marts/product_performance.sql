-- One row per product (name and category): volume, revenue and its rank and share of all revenue.
with products as (
    select
        product_name,
        category,
        count(*) as orders,
        sum(quantity) as units,
        sum(order_total) as revenue,
        count(distinct customer_id) filter (where not is_guest) as customers,
        min(order_date) as first_order_date,
        max(order_date) as last_order_date
    from {{ ref('fct_orders') }}
    group by product_name, category
)

select
    product_name,
    category,
    orders,
    units,
    revenue,
    round(revenue / nullif(units, 0), 2) as avg_unit_price,
    customers,
    first_order_date,
    last_order_date,
    rank() over (order by revenue desc) as revenue_rank,
    round(revenue / nullif(sum(revenue) over (), 0), 6) as revenue_share
from products
