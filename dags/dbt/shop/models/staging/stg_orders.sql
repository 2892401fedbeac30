-- The loaded orders, renamed for analysis. `loaded_at` is the load transaction's start; loads of a table are
-- serialized by an advisory lock taken first in their transaction, so it grows in commit order (the incremental
-- marts' watermark relies on that).
select
    order_id,
    order_ts,
    order_date,
    customer_id,
    customer_id = 'guest' as is_guest,
    product_name,
    category,
    region,
    quantity,
    unit_price,
    total_price as order_total,
    source_key,
    loaded_at
from {{ source('warehouse', 'orders') }}
