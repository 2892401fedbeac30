-- The incremental daily mart and the order fact agree day by day on orders and revenue: a day the incremental
-- logic failed to recompute shows up here (fix: dbt build --full-refresh -s daily_revenue).
select coalesce(f.order_date, d.order_date) as order_date, f.orders, d.orders as mart_orders, f.revenue, d.revenue as mart_revenue
from (
    select order_date, count(*) as orders, sum(order_total) as revenue from {{ ref('fct_orders') }} group by 1
) as f
full join (
    select order_date, sum(orders) as orders, sum(revenue) as revenue from {{ ref('daily_revenue') }} group by 1
) as d on d.order_date = f.order_date
where f.orders is distinct from d.orders or f.revenue is distinct from d.revenue
