"""Reindex chunks hold id ranges instead of id lists, and jobs plan them as they go.

Existing chunks become the range of their ids (the job's ids are taken in id order, so a chunk's ids are
exactly the job's ids between its smallest and largest); existing jobs were planned whole.
"""

from django.db import migrations, models


def lists_to_ranges(apps, schema_editor):  # type: ignore[no-untyped-def]
    ReindexChunk = apps.get_model("search", "ReindexChunk")
    ReindexJob = apps.get_model("search", "ReindexJob")
    for chunk in ReindexChunk.objects.all().iterator():
        ids = [int(pk) for pk in chunk.ids or []]
        chunk.first_id, chunk.last_id, chunk.size = (min(ids), max(ids), len(ids)) if ids else (0, -1, 0)
        chunk.save(update_fields=["first_id", "last_id", "size"])
    for job in ReindexJob.objects.all().iterator():
        last = ReindexChunk.objects.filter(job=job).aggregate(models.Max("last_id"))["last_id__max"]
        job.cursor = job.upper_id = last
        job.planned_all = True
        job.save(update_fields=["cursor", "upper_id", "planned_all"])


class Migration(migrations.Migration):
    dependencies = [
        ("search", "0003_reindex_chunks"),
    ]

    operations = [
        migrations.AddField(
            model_name="reindexjob", name="upper_id", field=models.BigIntegerField(blank=True, null=True)
        ),
        migrations.AddField(
            model_name="reindexjob", name="cursor", field=models.BigIntegerField(blank=True, null=True)
        ),
        migrations.AddField(model_name="reindexjob", name="planned_all", field=models.BooleanField(default=False)),
        migrations.AddField(model_name="reindexjob", name="total_estimated", field=models.BooleanField(default=False)),
        migrations.AddField(
            model_name="reindexchunk", name="first_id", field=models.BigIntegerField(default=0), preserve_default=False
        ),
        migrations.AddField(
            model_name="reindexchunk", name="last_id", field=models.BigIntegerField(default=0), preserve_default=False
        ),
        migrations.AddField(
            model_name="reindexchunk", name="size", field=models.PositiveIntegerField(default=0), preserve_default=False
        ),
        migrations.RunPython(lists_to_ranges, migrations.RunPython.noop),
        migrations.RemoveField(model_name="reindexchunk", name="ids"),
        migrations.AddIndex(
            model_name="reindexchunk",
            index=models.Index(
                condition=models.Q(("done_at__isnull", True)), fields=["job", "number"], name="reindex_chunk_pending"
            ),
        ),
    ]
