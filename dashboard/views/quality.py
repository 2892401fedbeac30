"""Data quality: freshness of the last load, rows loaded vs rejected per day, the top rejection reasons, every
file's reconciliation (read = loaded + rejected + duplicates), the files waiting for someone (parked) and the objects
under the raw prefixes that are not read (ignored, with the reason)."""

from __future__ import annotations

from datetime import UTC, datetime

import streamlit as st

from dashboard import data
from dashboard.views.common import checked_status, filters

st.title("Data quality")
status = checked_status()
start, end, _ = filters(status)

st.subheader("Freshness of the last load")
fresh = data.freshness()
now = datetime.now(UTC)
cols = st.columns(max(len(fresh), 1))
for col, row in zip(cols, fresh.itertuples(), strict=False):
    loaded = data.as_utc(row.last_loaded_at)
    age = f"{(now - loaded).total_seconds() / 3600:.1f} h ago" if loaded else "never"
    col.metric(f"{row.dataset}: last load", age, help=f"{loaded:%Y-%m-%d %H:%M} UTC" if loaded else None)

st.subheader("Rows loaded vs rejected per day")
days = data.rows_per_day(start, end)
if days.empty:
    st.info("No file of these days in the ledgers.")
else:
    per_day = days.groupby("partition_day", as_index=False)[["rows_loaded", "rows_rejected", "rows_duplicate"]].sum()
    per_day["partition_day"] = per_day["partition_day"].astype(str)
    st.bar_chart(
        per_day,
        x="partition_day",
        y=["rows_loaded", "rows_rejected", "rows_duplicate"],
        color=["#2e7d32", "#c62828", "#f9a825"],
    )
    st.dataframe(days, hide_index=True, width="stretch")

st.subheader("Top rejection reasons")
reasons = data.rejection_reasons()
if reasons.empty:
    st.success("No row has been rejected.")
else:
    st.dataframe(reasons, hide_index=True, width="stretch")
    st.caption("Rows rejected inside loaded files carry one reason each in their rejected CSV in S3.")

files = data.files(start, end)
st.subheader("Parked and failed files")
waiting = files[files["status"].isin(["parked", "failed"])]
if waiting.empty:
    st.success("No parked or failed file.")
else:
    st.error(f"{len(waiting)} file(s) need someone: retry or skip them from the pipeline's DAG (see its email).")
    st.dataframe(waiting, hide_index=True, width="stretch")

st.subheader("Files not read")
not_read = data.ignored()
if not_read.empty:
    st.success("Every object under the raw prefixes is in a partition folder and is a CSV file.")
else:
    st.warning(
        f"{len(not_read)} object(s) under the raw prefixes are not read: move or rename them "
        "(files go in <raw prefix>/dt=YYYY-MM-DD/ and end in .csv or .csv.gz)."
    )
    st.dataframe(not_read, hide_index=True, width="stretch")

st.subheader("Per-file reconciliation")
unreconciled = int((~files["reconciles"]).sum())
if unreconciled:
    st.error(f"{unreconciled} file(s) do not reconcile: read != loaded + rejected + duplicates.")
st.dataframe(files, hide_index=True, width="stretch")
