"""off_trastuzumab_days: empty when progression came on or before the stop

Clinical ruling (issue 15): a stop on or after progression was not a discontinuation in remission,
so the derived time off trastuzumab is empty (not zero or negative) and its band is `none`. The
server derives it on every write; this recomputes the records stored before the ruling. Versions
keep the fields as submitted, so nothing else changes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 20:30:00
"""
from __future__ import annotations

from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

_STOPPED_AFTER_PROGRESSION = ("maintenance_status = 'discontinued' AND progression_day IS NOT NULL "
                              "AND progression_day <= trastuzumab_stop_day")


def upgrade() -> None:
    op.execute("UPDATE records SET off_trastuzumab_days = NULL, off_trastuzumab_band = 'none' "
               f"WHERE {_STOPPED_AFTER_PROGRESSION}")


def downgrade() -> None:
    op.execute("UPDATE records SET off_trastuzumab_days = progression_day - trastuzumab_stop_day, "
               "off_trastuzumab_band = 'under_1y' "
               f"WHERE {_STOPPED_AFTER_PROGRESSION}")
