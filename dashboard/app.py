"""The shop's dashboard: sales and data quality from the dbt marts, read-only.

    make dashboard                                   # the local stack's marts (after make demo)
    DASHBOARD_DATABASE_URL=... streamlit run dashboard/app.py

Two pages (Sales, Data quality) share the sidebar's filters: order (or partition) dates and regions. Every page
says plainly when the marts are missing, empty or behind the last load instead of failing.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `streamlit run dashboard/app.py` runs this as a script: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st

from dashboard import data

HERE = Path(__file__).resolve().parent

st.set_page_config(page_title="Shop dashboard", page_icon=":bar_chart:", layout="wide")

status = data.status()
st.session_state["status"] = status
with st.sidebar:
    st.header("Filters")
    if status.problem is None and status.first_day and status.last_day:
        st.date_input(
            "Dates",
            value=(status.first_day, status.last_day),
            min_value=status.first_day,
            max_value=status.last_day,
            key="dates",
        )
        st.multiselect("Regions", data.REGIONS, default=list(data.REGIONS), key="regions")
    if status.built_at:
        st.caption(f"Marts built {status.built_at:%Y-%m-%d %H:%M} UTC")
    if status.last_load:
        st.caption(f"Last load {status.last_load:%Y-%m-%d %H:%M} UTC")

page = st.navigation(
    [
        st.Page(HERE / "views" / "sales.py", title="Sales", icon=":material/payments:", default=True),
        st.Page(HERE / "views" / "quality.py", title="Data quality", icon=":material/fact_check:"),
    ]
)
page.run()
