"""Vectors stored in their rows, not in the TOAST table.

pgvector's ``vector`` type asks for ``EXTERNAL`` storage: any row over about 2 KB moves its vector out of line,
uncompressed. A 512-d vector is 2,052 bytes, just over: every read of one from the table (the query product's
own vector, the distance each search returns per row, hybrid's exact re-scoring) was a TOAST index probe and two
chunk reads. ``MAIN`` keeps a vector in its row as long as the row fits a page (up to about 2,000 float
dimensions) and moves only bigger ones out of line, as before. Rows already stored keep their place until they
are written again (a reindex writes them); nothing is rewritten here.
"""

from django.db import migrations

TABLES = ("search_imageembedding", "search_productembedding")


class Migration(migrations.Migration):
    dependencies = [("search", "0008_staff_assistants")]

    operations = [
        migrations.RunSQL(
            sql=[f"ALTER TABLE {table} ALTER COLUMN vector SET STORAGE MAIN" for table in TABLES],
            reverse_sql=[f"ALTER TABLE {table} ALTER COLUMN vector SET STORAGE EXTERNAL" for table in TABLES],
        )
    ]
