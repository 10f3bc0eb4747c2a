# manage.py tune_search (issue 17): the HNSW search breadth measured per space version.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("search", "0006_ranking_weights"),
    ]

    operations = [
        migrations.AddField(model_name="spaceversion", name="tuned_ef",
                            field=models.PositiveIntegerField(blank=True, null=True)),
        migrations.AddField(model_name="spaceversion", name="tuned_recall",
                            field=models.FloatField(blank=True, null=True)),
        migrations.AddField(model_name="spaceversion", name="tuned_target",
                            field=models.FloatField(blank=True, null=True)),
        migrations.AddField(model_name="spaceversion", name="tuned_store",
                            field=models.CharField(blank=True, max_length=32)),
        migrations.AddField(model_name="spaceversion", name="tuned_size",
                            field=models.PositiveIntegerField(blank=True, null=True)),
        migrations.AddField(model_name="spaceversion", name="tuned_at",
                            field=models.DateTimeField(blank=True, null=True)),
    ]  # fmt: skip
