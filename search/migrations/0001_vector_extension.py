from django.db import migrations
from pgvector.django import VectorExtension


class Migration(migrations.Migration):
    """pgvector: the stored embeddings and their HNSW indexes need it."""

    initial = True
    dependencies: list[tuple[str, str]] = []
    operations = [VectorExtension()]
