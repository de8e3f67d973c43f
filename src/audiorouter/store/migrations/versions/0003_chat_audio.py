"""spoken chat answers by audio id (multi-turn across replicas)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ar_chat_audio",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("namespace", sa.String(64), nullable=False),
        sa.Column("transcript", sa.Text(), nullable=False),
        sa.Column("upstream", sa.JSON(), nullable=True),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_ar_chat_audio_expires", "ar_chat_audio", ["expires_at"])


def downgrade() -> None:
    op.drop_table("ar_chat_audio")
