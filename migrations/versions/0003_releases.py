"""releases: frozen states of the data for aggregates; noise from fixed record keys

- releases, and release_records: each state of a record that a release holds, stored once with
  the range of releases that hold it (privacy.md 2.1). No release exists after this migration:
  a steward cuts the first one (`registry releases cut`); until then aggregates answer 409.
- The noise of aggregate answers now comes from the records' own keys alone (records.cell_key,
  drawn once per record and kept for life, copied into each released state as record_key), so
  the registry-wide perturbation secret is no longer used and is deleted.
- The query log records the release a question was asked of; the data snapshot stays for
  questions asked before.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 20:00:29.395539
"""
from __future__ import annotations

import secrets
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('releases',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('cut_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('token_id', sa.Integer(), nullable=True),
    sa.Column('note', sa.String(length=200), nullable=True),
    sa.Column('record_count', sa.Integer(), nullable=False),
    sa.Column('record_key_sum', sa.BigInteger(), nullable=False),
    sa.Column('changes', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['token_id'], ['api_tokens.id'], name=op.f('fk_releases_token_id_api_tokens')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_releases'))
    )
    op.create_table('release_records',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('record_id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('record_key', sa.Integer(), nullable=False),
    sa.Column('valid_from', sa.Integer(), nullable=False),
    sa.Column('valid_until', sa.Integer(), nullable=True),
    sa.Column('met_dx_year', sa.Integer(), nullable=False),
    sa.Column('age_at_met_dx', sa.Integer(), nullable=False),
    sa.Column('sex', sa.String(length=7), nullable=False),
    sa.Column('her2_ihc', sa.String(length=8), nullable=False),
    sa.Column('her2_ish', sa.String(length=13), nullable=False),
    sa.Column('her2_tested_on', sa.String(length=10), nullable=True),
    sa.Column('er_status', sa.String(length=8), nullable=False),
    sa.Column('pr_status', sa.String(length=8), nullable=False),
    sa.Column('histology', sa.String(length=7), nullable=True),
    sa.Column('presentation', sa.String(length=9), nullable=False),
    sa.Column('primary_dx_day', sa.Integer(), nullable=True),
    sa.Column('prior_adjuvant_trastuzumab', sa.String(length=7), nullable=False),
    sa.Column('metastatic_sites_bone', sa.Boolean(), nullable=False),
    sa.Column('metastatic_sites_liver', sa.Boolean(), nullable=False),
    sa.Column('metastatic_sites_lung', sa.Boolean(), nullable=False),
    sa.Column('metastatic_sites_pleura', sa.Boolean(), nullable=False),
    sa.Column('metastatic_sites_cns', sa.Boolean(), nullable=False),
    sa.Column('metastatic_sites_distant_lymph_nodes', sa.Boolean(), nullable=False),
    sa.Column('metastatic_sites_skin_soft_tissue', sa.Boolean(), nullable=False),
    sa.Column('metastatic_sites_other', sa.Boolean(), nullable=False),
    sa.Column('lesion_count', sa.String(length=14), nullable=True),
    sa.Column('ecog_at_met_dx', sa.Integer(), nullable=True),
    sa.Column('first_line_anti_her2', sa.String(length=22), nullable=False),
    sa.Column('first_line_chemotherapy', sa.String(length=13), nullable=False),
    sa.Column('later_anti_her2_t_dm1', sa.Boolean(), nullable=False),
    sa.Column('later_anti_her2_t_dxd', sa.Boolean(), nullable=False),
    sa.Column('later_anti_her2_lapatinib', sa.Boolean(), nullable=False),
    sa.Column('later_anti_her2_tucatinib', sa.Boolean(), nullable=False),
    sa.Column('later_anti_her2_neratinib', sa.Boolean(), nullable=False),
    sa.Column('later_anti_her2_other', sa.Boolean(), nullable=False),
    sa.Column('local_therapy_metastases_surgery', sa.Boolean(), nullable=False),
    sa.Column('local_therapy_metastases_radiotherapy', sa.Boolean(), nullable=False),
    sa.Column('local_therapy_metastases_ablation', sa.Boolean(), nullable=False),
    sa.Column('primary_tumour_surgery', sa.String(length=3), nullable=True),
    sa.Column('endocrine_maintenance', sa.String(length=14), nullable=False),
    sa.Column('trastuzumab_start_day', sa.Integer(), nullable=False),
    sa.Column('best_response', sa.String(length=23), nullable=False),
    sa.Column('remission_start_day', sa.Integer(), nullable=False),
    sa.Column('response_assessment', sa.String(length=9), nullable=True),
    sa.Column('maintenance_status', sa.String(length=19), nullable=False),
    sa.Column('trastuzumab_stop_day', sa.Integer(), nullable=True),
    sa.Column('discontinuation_reason', sa.String(length=28), nullable=True),
    sa.Column('trastuzumab_resume_day', sa.Integer(), nullable=True),
    sa.Column('lvef_baseline_pct', sa.Integer(), nullable=True),
    sa.Column('lvef_nadir_pct', sa.Integer(), nullable=True),
    sa.Column('cardiac_event', sa.String(length=25), nullable=False),
    sa.Column('progression_day', sa.Integer(), nullable=True),
    sa.Column('disease_status_last', sa.String(length=11), nullable=False),
    sa.Column('last_followup_day', sa.Integer(), nullable=False),
    sa.Column('vital_status', sa.String(length=5), nullable=False),
    sa.Column('cause_of_death', sa.String(length=13), nullable=True),
    sa.Column('hr_status', sa.String(length=8), nullable=False),
    sa.Column('visceral_disease', sa.Boolean(), nullable=False),
    sa.Column('bone_only', sa.Boolean(), nullable=False),
    sa.Column('organ_count_band', sa.String(length=2), nullable=False),
    sa.Column('cns_metastases', sa.Boolean(), nullable=False),
    sa.Column('remission_days', sa.Integer(), nullable=False),
    sa.Column('remission_band', sa.String(length=8), nullable=False),
    sa.Column('trastuzumab_days', sa.Integer(), nullable=False),
    sa.Column('off_trastuzumab_days', sa.Integer(), nullable=True),
    sa.Column('off_trastuzumab_band', sa.String(length=8), nullable=False),
    sa.Column('progressed_after_stop', sa.Boolean(), nullable=True),
    sa.Column('age_band', sa.String(length=7), nullable=False),
    sa.Column('met_dx_period', sa.String(length=9), nullable=False),
    sa.Column('ecog_band', sa.String(length=7), nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], name=op.f('fk_release_records_site_id_sites')),
    sa.ForeignKeyConstraint(['valid_from'], ['releases.id'], name=op.f('fk_release_records_valid_from_releases')),
    sa.ForeignKeyConstraint(['valid_until'], ['releases.id'], name=op.f('fk_release_records_valid_until_releases')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_release_records'))
    )
    with op.batch_alter_table('release_records', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_release_records_record_id'), ['record_id'], unique=False)
        batch_op.create_index('ix_release_records_valid_until_record_id', ['valid_until', 'record_id'], unique=False)

    with op.batch_alter_table('query_log', schema=None) as batch_op:
        batch_op.add_column(sa.Column('release_id', sa.Integer(), nullable=True))
        batch_op.alter_column('snapshot',
               existing_type=sa.VARCHAR(length=64),
               nullable=True)
        batch_op.drop_index(batch_op.f('ix_query_log_token_id_query'))
        batch_op.create_index('ix_query_log_release_id_query', ['release_id', 'query'], unique=False)
        batch_op.create_index('ix_query_log_token_id_release_id_query', ['token_id', 'release_id', 'query'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_query_log_release_id_releases'), 'releases', ['release_id'], ['id'])

    op.execute("DELETE FROM registry_secrets WHERE name = 'perturbation'")
    op.add_column('api_tokens', sa.Column('question_budget', sa.Integer(), nullable=True))



def downgrade() -> None:
    secrets_table = sa.table('registry_secrets', sa.column('name', sa.String),
                             sa.column('value', sa.String),
                             sa.column('created_at', sa.DateTime(timezone=True)))
    op.bulk_insert(secrets_table, [{"name": "perturbation", "value": secrets.token_hex(32),
                                    "created_at": datetime.now(timezone.utc)}])
    op.execute("UPDATE query_log SET snapshot = 'release' WHERE snapshot IS NULL")
    # Not a batch (which would copy api_tokens, that other tables reference): SQLite 3.35+
    # drops a column in place, as PostgreSQL does.
    op.execute("ALTER TABLE api_tokens DROP COLUMN question_budget")
    with op.batch_alter_table('query_log', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_query_log_release_id_releases'), type_='foreignkey')
        batch_op.drop_index('ix_query_log_token_id_release_id_query')
        batch_op.drop_index('ix_query_log_release_id_query')
        batch_op.create_index(batch_op.f('ix_query_log_token_id_query'), ['token_id', 'query'], unique=False)
        batch_op.alter_column('snapshot',
               existing_type=sa.VARCHAR(length=64),
               nullable=False)
        batch_op.drop_column('release_id')

    with op.batch_alter_table('release_records', schema=None) as batch_op:
        batch_op.drop_index('ix_release_records_valid_until_record_id')
        batch_op.drop_index(batch_op.f('ix_release_records_record_id'))

    op.drop_table('release_records')
    op.drop_table('releases')
