"""off_trastuzumab_days empty when progression came on or before the stop; remission before stop

Clinical ruling (issue 15): a stop on or after progression was not a discontinuation in remission,
so the derived time off trastuzumab is empty (not zero or negative) and its band is `none`. The
server derives it on every write; this recomputes the records stored before the ruling.

New derived field `remission_before_stop_band` (a covariate of the hazard-ratio analyses): after a
discontinuation in remission, how long remission had lasted at the stop, in bands of 730 and 1826
days (as core/derived.py's TWO_YEARS and FIVE_YEARS); empty otherwise. Backfilled here.

Both apply to the live records and to every released record state (release_records, issue 10):
a release is a frozen state of the data, but a derived field is the registry's reading of that
data, so released answers use the ruling too (releases stay reproducible from this point on).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 20:30:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_STOPPED_AFTER_PROGRESSION = ("maintenance_status = 'discontinued' AND progression_day IS NOT NULL "
                              "AND progression_day <= trastuzumab_stop_day")
_DISCONTINUED_IN_REMISSION = ("maintenance_status = 'discontinued' AND (progression_day IS NULL "
                              "OR progression_day > trastuzumab_stop_day)")


_TABLES = ('records', 'release_records')
_BAND_OF_STOP = ("CASE WHEN trastuzumab_stop_day - remission_start_day < 730 THEN 'under_2y' "
                 "WHEN trastuzumab_stop_day - remission_start_day < 1826 THEN '2_to_5y' "
                 "ELSE '5y_plus' END")


def upgrade() -> None:
    with op.batch_alter_table('records', schema=None) as batch_op:
        batch_op.add_column(sa.Column('remission_before_stop_band', sa.Enum(
            'under_2y', '2_to_5y', '5y_plus', name='remission_before_stop_band',
            native_enum=False, create_constraint=True), nullable=True))
    # Released states keep codes as plain strings (the live table's constraint checked them).
    with op.batch_alter_table('release_records', schema=None) as batch_op:
        batch_op.add_column(sa.Column('remission_before_stop_band', sa.String(length=8),
                                      nullable=True))
    for table in _TABLES:
        op.execute(f"UPDATE {table} SET off_trastuzumab_days = NULL, "
                   f"off_trastuzumab_band = 'none' WHERE {_STOPPED_AFTER_PROGRESSION}")
        op.execute(f"UPDATE {table} SET remission_before_stop_band = {_BAND_OF_STOP} "
                   f"WHERE {_DISCONTINUED_IN_REMISSION}")


def downgrade() -> None:
    for table in _TABLES:
        op.execute(f"UPDATE {table} SET off_trastuzumab_days = "
                   "progression_day - trastuzumab_stop_day, off_trastuzumab_band = 'under_1y' "
                   f"WHERE {_STOPPED_AFTER_PROGRESSION}")
    with op.batch_alter_table('release_records', schema=None) as batch_op:
        batch_op.drop_column('remission_before_stop_band')
    with op.batch_alter_table('records', schema=None) as batch_op:
        batch_op.drop_constraint('remission_before_stop_band', type_='check')
        batch_op.drop_column('remission_before_stop_band')
