"""What both pages do first: say why there is nothing to show, warn when the data is behind, read the filters."""

from __future__ import annotations

from datetime import date

import streamlit as st

from dashboard import data


def checked_status() -> data.Status:
    """The marts' status; stops the page (after saying why) when there is nothing to show."""
    status: data.Status = st.session_state.get("status") or data.status()
    if status.problem:
        st.info(status.problem)
        st.stop()
    for warning in status.warnings:
        st.warning(warning)
    return status


def filters(status: data.Status) -> tuple[date, date, list[str]]:
    """The sidebar's dates (a range; a single day while one end is being picked) and regions."""
    picked = st.session_state.get("dates") or (status.first_day, status.last_day)
    start, end = (picked[0], picked[-1]) if len(picked) else (status.first_day, status.last_day)
    regions = st.session_state.get("regions")
    return start, end, list(data.REGIONS if regions is None else regions)
