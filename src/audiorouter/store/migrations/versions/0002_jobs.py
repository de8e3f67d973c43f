"""batch transcription jobs

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ar_jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("key_hash", sa.String(64), nullable=True),
        sa.Column("idempotency_key", sa.String(330), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("audio_key", sa.String(256), nullable=True),
        sa.Column("audio_bytes", sa.BigInteger(), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("done_s", sa.Float(), nullable=False),
        sa.Column("generation_id", sa.String(64), nullable=False),
        sa.Column("reserved_nano", sa.BigInteger(), nullable=False),
        sa.Column("include_byok", sa.Boolean(), nullable=False),
        sa.Column("zdr", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("fence", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("enqueued_at", sa.DateTime(), nullable=True),
        sa.Column("result_key", sa.String(256), nullable=True),
        sa.Column("usage", sa.JSON(), nullable=True),
        sa.Column("cost_nano", sa.BigInteger(), nullable=False),
        sa.Column("provider", sa.String(64), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("webhook_url", sa.Text(), nullable=True),
        sa.Column("webhook_secret", sa.Text(), nullable=True),
        sa.Column("webhook_state", sa.String(16), nullable=True),
        sa.Column("webhook_attempts", sa.Integer(), nullable=False),
        sa.Column("webhook_next_at", sa.DateTime(), nullable=True),
        sa.Column("webhook_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("purge_at", sa.DateTime(), nullable=True),
        sa.Column("purged", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_ar_jobs_key_created", "ar_jobs", ["key_hash", "created_at"])
    op.create_index("ix_ar_jobs_status_lease", "ar_jobs", ["status", "lease_until"])
    op.create_index("ix_ar_jobs_idem", "ar_jobs", ["idempotency_key"], unique=True)
    op.create_index("ix_ar_jobs_webhook", "ar_jobs", ["webhook_state", "webhook_next_at"])
    op.create_index("ix_ar_jobs_purge", "ar_jobs", ["purged", "purge_at"])
    op.create_index("ix_ar_jobs_generation", "ar_jobs", ["generation_id"])


def downgrade() -> None:
    op.drop_table("ar_jobs")
