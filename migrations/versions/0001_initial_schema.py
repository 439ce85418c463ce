"""initial schema: sites, tokens, records, versions, tombstones, audit and query logs

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 22:37:34.589771
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sites',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('length(code) BETWEEN 2 AND 16', name=op.f('ck_sites_code_length')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sites')),
    sa.UniqueConstraint('code', name=op.f('uq_sites_code'))
    )
    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('public_id', sa.String(length=16), nullable=False),
    sa.Column('secret_sha256', sa.String(length=64), nullable=False),
    sa.Column('role', sa.Enum('submitter', 'coordinator', 'steward', name='role', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=True),
    sa.Column('label', sa.String(length=200), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("(role = 'submitter') = (site_id IS NOT NULL)", name=op.f('ck_api_tokens_submitter_has_site')),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], name=op.f('fk_api_tokens_site_id_sites')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('public_id', name=op.f('uq_api_tokens_public_id'))
    )
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_tokens_site_id'), ['site_id'], unique=False)

    op.create_table('records',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('subject_id', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('cell_key', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('submission_digest', sa.String(length=64), nullable=True),
    sa.Column('met_dx_year', sa.Integer(), nullable=False),
    sa.Column('age_at_met_dx', sa.Integer(), nullable=False),
    sa.Column('sex', sa.Enum('female', 'male', 'unknown', name='sex', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('her2_ihc', sa.Enum('0', '1+', '2+', '3+', 'not_done', 'unknown', name='her2_ihc', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('her2_ish', sa.Enum('amplified', 'not_amplified', 'equivocal', 'not_done', 'unknown', name='her2_ish', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('her2_tested_on', sa.Enum('primary', 'metastasis', 'both', 'unknown', name='her2_tested_on', native_enum=False, create_constraint=True), nullable=True),
    sa.Column('er_status', sa.Enum('positive', 'negative', 'unknown', name='er_status', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('pr_status', sa.Enum('positive', 'negative', 'unknown', name='pr_status', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('histology', sa.Enum('ductal', 'lobular', 'mixed', 'other', 'unknown', name='histology', native_enum=False, create_constraint=True), nullable=True),
    sa.Column('presentation', sa.Enum('de_novo', 'recurrent', name='presentation', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('primary_dx_day', sa.Integer(), nullable=True),
    sa.Column('prior_adjuvant_trastuzumab', sa.Enum('yes', 'no', 'unknown', name='prior_adjuvant_trastuzumab', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('metastatic_sites_bone', sa.Boolean(), nullable=False),
    sa.Column('metastatic_sites_liver', sa.Boolean(), nullable=False),
    sa.Column('metastatic_sites_lung', sa.Boolean(), nullable=False),
    sa.Column('metastatic_sites_pleura', sa.Boolean(), nullable=False),
    sa.Column('metastatic_sites_cns', sa.Boolean(), nullable=False),
    sa.Column('metastatic_sites_distant_lymph_nodes', sa.Boolean(), nullable=False),
    sa.Column('metastatic_sites_skin_soft_tissue', sa.Boolean(), nullable=False),
    sa.Column('metastatic_sites_other', sa.Boolean(), nullable=False),
    sa.Column('lesion_count', sa.Enum('single', 'two_to_five', 'more_than_five', 'unknown', name='lesion_count', native_enum=False, create_constraint=True), nullable=True),
    sa.Column('ecog_at_met_dx', sa.Integer(), nullable=True),
    sa.Column('first_line_anti_her2', sa.Enum('trastuzumab', 'trastuzumab_pertuzumab', 'other', name='first_line_anti_her2', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('first_line_chemotherapy', sa.Enum('taxane', 'vinorelbine', 'capecitabine', 'anthracycline', 'other', 'none', name='first_line_chemotherapy', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('later_anti_her2_t_dm1', sa.Boolean(), nullable=False),
    sa.Column('later_anti_her2_t_dxd', sa.Boolean(), nullable=False),
    sa.Column('later_anti_her2_lapatinib', sa.Boolean(), nullable=False),
    sa.Column('later_anti_her2_tucatinib', sa.Boolean(), nullable=False),
    sa.Column('later_anti_her2_neratinib', sa.Boolean(), nullable=False),
    sa.Column('later_anti_her2_other', sa.Boolean(), nullable=False),
    sa.Column('local_therapy_metastases_surgery', sa.Boolean(), nullable=False),
    sa.Column('local_therapy_metastases_radiotherapy', sa.Boolean(), nullable=False),
    sa.Column('local_therapy_metastases_ablation', sa.Boolean(), nullable=False),
    sa.Column('primary_tumour_surgery', sa.Enum('yes', 'no', name='primary_tumour_surgery', native_enum=False, create_constraint=True), nullable=True),
    sa.Column('endocrine_maintenance', sa.Enum('yes', 'no', 'not_applicable', name='endocrine_maintenance', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('trastuzumab_start_day', sa.Integer(), nullable=False),
    sa.Column('best_response', sa.Enum('complete_response', 'ned_after_local_therapy', 'partial_response', 'stable_disease', 'progressive_disease', 'not_evaluable', name='best_response', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('remission_start_day', sa.Integer(), nullable=False),
    sa.Column('response_assessment', sa.Enum('ct', 'pet_ct', 'mri', 'bone_scan', 'clinical', name='response_assessment', native_enum=False, create_constraint=True), nullable=True),
    sa.Column('maintenance_status', sa.Enum('ongoing', 'discontinued', 'interrupted_resumed', name='maintenance_status', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('trastuzumab_stop_day', sa.Integer(), nullable=True),
    sa.Column('discontinuation_reason', sa.Enum('remission_physician_decision', 'patient_preference', 'cardiac_toxicity', 'other_toxicity', 'access_or_cost', 'progression', 'other', 'unknown', name='discontinuation_reason', native_enum=False, create_constraint=True), nullable=True),
    sa.Column('trastuzumab_resume_day', sa.Integer(), nullable=True),
    sa.Column('lvef_baseline_pct', sa.Integer(), nullable=True),
    sa.Column('lvef_nadir_pct', sa.Integer(), nullable=True),
    sa.Column('cardiac_event', sa.Enum('none', 'asymptomatic_lvef_decline', 'heart_failure', 'unknown', name='cardiac_event', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('progression_day', sa.Integer(), nullable=True),
    sa.Column('disease_status_last', sa.Enum('ned', 'stable', 'responding', 'progressing', 'unknown', name='disease_status_last', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('last_followup_day', sa.Integer(), nullable=False),
    sa.Column('vital_status', sa.Enum('alive', 'dead', name='vital_status', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('cause_of_death', sa.Enum('breast_cancer', 'other', 'unknown', name='cause_of_death', native_enum=False, create_constraint=True), nullable=True),
    sa.Column('hr_status', sa.Enum('positive', 'negative', 'unknown', name='hr_status', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('visceral_disease', sa.Boolean(), nullable=False),
    sa.Column('bone_only', sa.Boolean(), nullable=False),
    sa.Column('organ_count_band', sa.Enum('1', '2', '3+', name='organ_count_band', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('cns_metastases', sa.Boolean(), nullable=False),
    sa.Column('remission_days', sa.Integer(), nullable=False),
    sa.Column('remission_band', sa.Enum('under_2y', '2_to_5y', '5_to_10y', '10y_plus', name='remission_band', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('trastuzumab_days', sa.Integer(), nullable=False),
    sa.Column('off_trastuzumab_days', sa.Integer(), nullable=True),
    sa.Column('off_trastuzumab_band', sa.Enum('none', 'under_1y', '1_to_3y', '3y_plus', name='off_trastuzumab_band', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('progressed_after_stop', sa.Boolean(), nullable=True),
    sa.Column('age_band', sa.Enum('18_39', '40_49', '50_59', '60_69', '70_plus', name='age_band', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('met_dx_period', sa.String(length=9), nullable=False),
    sa.Column('ecog_band', sa.Enum('0', '1', '2+', 'unknown', name='ecog_band', native_enum=False, create_constraint=True), nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], name=op.f('fk_records_site_id_sites')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_records')),
    sa.UniqueConstraint('site_id', 'subject_id', name=op.f('uq_records_site_id_subject_id'))
    )
    with op.batch_alter_table('records', schema=None) as batch_op:
        batch_op.create_index('ix_records_site_id_id', ['site_id', 'id'], unique=False)
        batch_op.create_index('ix_records_site_id_updated_at', ['site_id', 'updated_at'], unique=False)

    op.create_table('tombstones',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('subject_id', sa.String(length=64), nullable=False),
    sa.Column('withdrawn_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reason', sa.Enum('consent_withdrawn', 'deleted_at_source', 'entered_in_error', name='reason', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], name=op.f('fk_tombstones_site_id_sites')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tombstones')),
    sa.UniqueConstraint('site_id', 'subject_id', name=op.f('uq_tombstones_site_id_subject_id'))
    )
    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('token_id', sa.Integer(), nullable=True),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('subject_id', sa.String(length=64), nullable=False),
    sa.Column('action', sa.Enum('create', 'update', 'withdraw', name='action', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('source', sa.Enum('api', 'redcap-sync', name='source', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('version', sa.Integer(), nullable=True),
    sa.Column('changed_fields', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], name=op.f('fk_audit_log_site_id_sites')),
    sa.ForeignKeyConstraint(['token_id'], ['api_tokens.id'], name=op.f('fk_audit_log_token_id_api_tokens')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index('ix_audit_log_site_id_subject_id', ['site_id', 'subject_id'], unique=False)

    op.create_table('query_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('asked_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('token_id', sa.Integer(), nullable=False),
    sa.Column('query', sa.String(length=500), nullable=False),
    sa.Column('snapshot', sa.String(length=64), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('released', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['token_id'], ['api_tokens.id'], name=op.f('fk_query_log_token_id_api_tokens')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_query_log'))
    )
    with op.batch_alter_table('query_log', schema=None) as batch_op:
        batch_op.create_index('ix_query_log_token_id_query', ['token_id', 'query'], unique=False)

    op.create_table('record_versions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('record_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('source', sa.Enum('api', 'redcap-sync', name='source', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('token_id', sa.Integer(), nullable=True),
    sa.Column('changed_fields', sa.JSON(), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['record_id'], ['records.id'], name=op.f('fk_record_versions_record_id_records'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['token_id'], ['api_tokens.id'], name=op.f('fk_record_versions_token_id_api_tokens')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_record_versions')),
    sa.UniqueConstraint('record_id', 'version', name=op.f('uq_record_versions_record_id_version'))
    )
    create_append_only_guard()


def downgrade() -> None:
    drop_append_only_guard()
    op.drop_table('record_versions')
    with op.batch_alter_table('query_log', schema=None) as batch_op:
        batch_op.drop_index('ix_query_log_token_id_query')

    op.drop_table('query_log')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_log_site_id_subject_id')

    op.drop_table('audit_log')
    op.drop_table('tombstones')
    with op.batch_alter_table('records', schema=None) as batch_op:
        batch_op.drop_index('ix_records_site_id_updated_at')
        batch_op.drop_index('ix_records_site_id_id')

    op.drop_table('records')
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_tokens_site_id'))

    op.drop_table('api_tokens')
    op.drop_table('sites')


def create_append_only_guard() -> None:
    """The audit log is append-only: the database itself refuses UPDATE and DELETE on it."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$"
        )
        op.execute(
            "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
        )
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_log_no_{event.lower()} BEFORE {event} ON audit_log "
                "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
            )


def drop_append_only_guard() -> None:
    """Remove the append-only guard (before the table goes)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    else:
        for event in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS audit_log_no_{event}")
