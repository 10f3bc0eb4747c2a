"""Stored vectors (with the model version that made them), space state, versions and reindex jobs.

Vectors of every space live in one ``vector`` column without a fixed dimension.
Each (space, model version) gets its own partial HNSW index on an expression
that casts to the right dimension (``halfvec`` above pgvector's 2,000-dimension
limit for indexed ``vector``), so a model upgrade with another dimension is a
new version with a new index, built beside the old one.
"""

from __future__ import annotations

import numpy as np
from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.db import connection, models
from django.db.models import Q
from pgvector import Vector
from pgvector.django import VectorField

from catalog.models import Product, ProductImage
from search.vectorstores.sql import product_vector_sql


class EmbeddingStatus(models.TextChoices):
    OK = "ok", "computed"
    FAILED = "failed", "failed"


class SpaceStateQuerySet(models.QuerySet["SpaceState"]):
    def unavailable_reasons(self) -> dict[str, str]:
        """Spaces whose model a process tried to load and could not, with why. A space nobody has tried yet is
        not listed: it may well load (and then it is only "not indexed yet")."""
        rows = self.filter(checked_at__isnull=False, available=False).values_list("key", "reason")
        return {key: reason or "the model could not be loaded" for key, reason in rows}


class SpaceState(models.Model):
    """What the last process that tried to load a space found: can it be used, and if not, why."""

    key = models.CharField(max_length=32, unique=True)
    model_id = models.CharField(max_length=300, blank=True)
    available = models.BooleanField(default=False)
    reason = models.TextField(blank=True, help_text="Why the space is unavailable.")
    checked_at = models.DateTimeField(null=True, blank=True)

    objects = SpaceStateQuerySet.as_manager()

    class Meta:
        ordering = ["key"]
        verbose_name = "embedding space"

    def __str__(self) -> str:
        return self.key

    @property
    def model_name(self) -> str:
        """The model, without where it runs (``model_id`` is "<model> · <runtime>" once a process loaded it)."""
        return self.model_id.rpartition(" · ")[0] or self.model_id

    @property
    def runtime(self) -> str:
        """Where its forward passes run, as the process that loaded it said: "onnx", "torch (ONNX unavailable: …)"."""
        return self.model_id.rpartition(" · ")[2] if " · " in self.model_id else ""

    @property
    def needs_torch(self) -> bool:
        """Does serving this space load PyTorch (about 500 MB a process)? Only when it runs eagerly or fell back."""
        return "torch" in self.runtime


class SpaceVersion(models.Model):
    """One model version of a space. Search reads only the active one; a new one is built beside it."""

    class State(models.TextChoices):
        BUILDING = "building", "building"
        ACTIVE = "active", "active"
        RETIRED = "retired", "retired"

    space = models.CharField(max_length=32)
    version = models.CharField(max_length=200)
    dimension = models.PositiveIntegerField()
    index_name = models.CharField(max_length=63, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.BUILDING)
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    # ``manage.py tune_search``: the smallest HNSW search breadth (pgvector's hnsw.ef_search, Milvus's ef) that
    # reached the recall target on the version's own vectors, used by every query of it; the recall@10 measured
    # with it on held-out queries, for which store, at how many vectors, and when. ``tuned_ef`` null: the defaults.
    tuned_ef = models.PositiveIntegerField(null=True, blank=True)
    tuned_recall = models.FloatField(null=True, blank=True)
    tuned_target = models.FloatField(null=True, blank=True)
    tuned_store = models.CharField(max_length=32, blank=True)
    tuned_size = models.PositiveIntegerField(null=True, blank=True)
    tuned_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["space", "-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["space", "version"], name="space_version_unique"),
            models.UniqueConstraint(
                fields=["space"], condition=models.Q(state="active"), name="one_active_version_per_space"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.space} {self.version} ({self.state})"

    @property
    def storage_type(self) -> str:
        """``vector`` up to 2,000 dimensions (HNSW limit), ``halfvec`` up to 4,000."""
        return "vector" if self.dimension <= 2000 else "halfvec"


class Embedding(models.Model):
    """What every stored vector carries: its space, the model version that made it, and its state."""

    space = models.CharField(max_length=32)
    model_version = models.CharField(max_length=200)
    status = models.CharField(max_length=10, choices=EmbeddingStatus.choices, default=EmbeddingStatus.OK)
    vector = VectorField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


def _one_vector(sql: str, params: list[int | str]) -> np.ndarray | None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return None if row is None else _as_array(row[0])


def _as_array(value: Vector | str | None) -> np.ndarray | None:
    if value is None:
        return None
    vector = value if isinstance(value, Vector) else Vector.from_text(value)  # text unless an adapter is registered
    return np.asarray(vector.to_numpy(), dtype=np.float32)


def product_query_vectors(*, product_id: int, image: tuple[str, str],
                          text: tuple[str, str] | None) -> tuple[np.ndarray | None, np.ndarray | None]:  # fmt: skip
    """A product's vectors in an image space version and a text space version (``(space, version)`` each), as
    :meth:`ImageEmbeddingQuerySet.product_vector` and :meth:`ProductEmbeddingQuerySet.product_vector` read them,
    in one statement: the two query vectors of a hybrid search in another store."""
    if text is None:
        return ImageEmbedding.objects.product_vector(product_id=product_id, space=image[0], version=image[1]), None
    with connection.cursor() as cursor:
        own_image = product_vector_sql(space=image[0], version=image[1], product="%s")
        cursor.execute(f"SELECT ({own_image}), ({_TEXT_VECTOR_SQL})",
                       [product_id, product_id, *text, EmbeddingStatus.OK])  # fmt: skip
        image_value, text_value = cursor.fetchone()
    return _as_array(image_value), _as_array(text_value)


class ImageEmbeddingQuerySet(models.QuerySet["ImageEmbedding"]):
    def ok(self, *, space: str, version: str) -> ImageEmbeddingQuerySet:
        """Computed vectors of one space version."""
        return self.filter(space=space, model_version=version, status=EmbeddingStatus.OK)

    def product_vector(self, *, product_id: int, space: str, version: str) -> np.ndarray | None:
        """The vector that stands for a product: its primary image's, else its first embedded image's.

        One statement written out rather than composed by the ORM: the Milvus store reads this before each
        "similar products" search, and composing the query cost 1.5 ms of the 2.3 it took (docs/scaling.md)."""
        return _one_vector(product_vector_sql(space=space, version=version, product="%s"), [product_id])


class ImageEmbedding(Embedding):
    image = models.ForeignKey(ProductImage, on_delete=models.CASCADE, related_name="embeddings")

    objects = ImageEmbeddingQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["image", "space", "model_version"], name="image_embedding_unique"),
        ]
        indexes = [models.Index(fields=["space", "model_version", "status"], name="image_embedding_space")]

    def __str__(self) -> str:
        return f"image {self.image_id} in {self.space} {self.model_version}: {self.status}"


class ProductEmbeddingQuerySet(models.QuerySet["ProductEmbedding"]):
    def product_vector(self, *, product_id: int, space: str, version: str) -> np.ndarray | None:
        """A product's computed vector in a text space version (one plain statement, as the image one)."""
        return _one_vector(_TEXT_VECTOR_SQL, [product_id, space, version, EmbeddingStatus.OK])


class ProductEmbedding(Embedding):
    """Text-space vectors of a product's title and description."""

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="embeddings")
    source_hash = models.CharField(max_length=64, help_text="SHA-256 of the text that was embedded.")

    objects = ProductEmbeddingQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["product", "space", "model_version"], name="product_embedding_unique"),
        ]
        indexes = [models.Index(fields=["space", "model_version", "status"], name="product_embedding_space")]

    def __str__(self) -> str:
        return f"product {self.product_id} in {self.space} {self.model_version}: {self.status}"


class ImageColourQuerySet(models.QuerySet["ImageColour"]):
    def of_products(self, product_ids: list[int]) -> dict[int, list[str]]:
        """Each product's colours: its own ``color`` field first, then its pictures' dominant colours."""
        out: dict[int, list[str]] = {pk: [] for pk in product_ids}
        for pk, colour in Product.objects.filter(pk__in=product_ids).exclude(color="").values_list("pk", "color"):
            out[pk].append(colour.strip().lower())
        rows = (self.filter(image__product_id__in=product_ids)
                .order_by("image__product_id", "-image__is_primary", "image__position", "image_id")
                .values_list("image__product_id", "names"))  # fmt: skip
        for pk, names in rows:
            out[pk] += [name for name in names if name not in out[pk]]
        return out


class ImageColour(models.Model):
    """A picture's dominant named colours (``search.colours``), largest share first, computed by the worker
    when it embeds the picture. Recomputed when the palette changes (``palette_version``)."""

    image = models.OneToOneField(ProductImage, on_delete=models.CASCADE, primary_key=True, related_name="colours")
    names = ArrayField(models.CharField(max_length=16), default=list, blank=True)
    shares = ArrayField(models.FloatField(), default=list, blank=True)
    palette_version = models.PositiveSmallIntegerField()
    computed_at = models.DateTimeField(auto_now=True)

    objects = ImageColourQuerySet.as_manager()

    class Meta:
        indexes = [GinIndex(fields=["names"], name="image_colour_names")]

    def __str__(self) -> str:
        return f"image {self.image_id}: {', '.join(self.names) or 'no colour'}"


def colour_condition(colour: str) -> Q:
    """Products of this colour (for product querysets): the product's own field says so, or one of its
    pictures is mostly it. The vector stores filter the same way inside their queries."""
    pictures = ImageColour.objects.filter(image__product_id=models.OuterRef("pk"), names__contains=[colour])
    return Q(color__iexact=colour) | Q(models.Exists(pictures))


class ReindexJob(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        DONE = "done", "done"
        FAILED = "failed", "failed"

    space = models.CharField(max_length=32)
    missing_only = models.BooleanField(default=False)
    product_ids = models.JSONField(null=True, blank=True, help_text="Only these products; empty means all.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    total = models.PositiveIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Set whenever a chunk finishes: a running job whose heartbeat is old has lost its messages
    # (a broker that crashed before writing them to disk) and the sweep queues its chunks again.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Chunks are planned as the job goes, a window ahead of the workers, by id ranges: the job covers the
    # ids up to ``upper_id`` (the largest when it started; later uploads are the worker's own business), and
    # ``cursor`` is the last id a planned chunk covers. ``planned_all``: no id is left beyond the cursor.
    upper_id = models.BigIntegerField(null=True, blank=True)
    cursor = models.BigIntegerField(null=True, blank=True)
    planned_all = models.BooleanField(default=False)
    # ``total`` is the planner's estimate (a job too big to count at its start); exact once the job is done.
    total_estimated = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"reindex {self.space} #{self.pk}"

    @property
    def progress(self) -> str:
        # skipped: counted at the start, then deleted or (missing only) embedded by uploads meanwhile
        total = f"~{self.total}" if self.total_estimated else str(self.total)
        return f"{self.processed}/{total}" + (f" ({self.skipped} gone or done meanwhile)" if self.skipped else "")

    @property
    def percent(self) -> int:
        done = self.processed + self.skipped
        if self.status == "done":
            return 100
        return min(99, int(100 * done / self.total)) if self.total else 0


class ReindexChunk(models.Model):
    """A slice of a reindex job, run as one short task.

    Jobs are cut into chunks so that no task runs for long: a message whose worker was killed is
    handed out again after the broker's visibility timeout, and that timeout has to be longer than
    any task. Finishing a chunk is recorded once (``done_at``), so a chunk that runs twice counts once.
    """

    job = models.ForeignKey(ReindexJob, on_delete=models.CASCADE, related_name="chunks")
    number = models.PositiveIntegerField()
    # The job's ids (images, or products for a text space) from first_id to last_id, both included:
    # ``size`` of them when the chunk was planned. Two numbers per chunk, whatever the chunk size.
    first_id = models.BigIntegerField()
    last_id = models.BigIntegerField()
    size = models.PositiveIntegerField()
    processed = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job", "number"]
        constraints = [models.UniqueConstraint(fields=["job", "number"], name="reindex_chunk_unique_number")]
        # Every finished chunk looks up the job's pending ones: with a million chunk rows behind it, only
        # the few in flight should be read.
        indexes = [models.Index(fields=["job", "number"], condition=models.Q(done_at__isnull=True),
                                name="reindex_chunk_pending")]  # fmt: skip

    def __str__(self) -> str:
        return f"{self.job} chunk {self.number}"


class RankingWeights(models.Model):
    """The weights of the hybrid "Looks similar" ranking, chosen for this catalogue by ``evaluate --tune hybrid``
    (cross-validated across categories) and used from then on. Each tuning adds a row; the newest one for the
    spaces in use wins."""

    ranking = models.CharField(max_length=32, default="hybrid")
    image_space = models.CharField(max_length=32)
    image_version = models.CharField(max_length=200)
    text_space = models.CharField(max_length=32)
    text_version = models.CharField(max_length=200)
    image_weight = models.FloatField()
    text_weight = models.FloatField()
    k = models.PositiveSmallIntegerField(help_text="Precision is measured at this many results.")
    precision = models.FloatField(help_text="Cross-validated precision@k of the hybrid ranking with these weights.")
    best_single_space = models.CharField(max_length=32)
    best_single_precision = models.FloatField(help_text="Precision@k of the best single space, same queries.")
    folds = models.PositiveSmallIntegerField()
    queries = models.PositiveIntegerField()
    table = models.JSONField(default=dict, help_text="Precision@k for every weight tried, overall and per fold.")
    tuned_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-tuned_at", "-pk"]
        verbose_name = "ranking weights"
        verbose_name_plural = "ranking weights"

    def __str__(self) -> str:
        return f"{self.ranking}: {self.image_space} {self.image_weight:.2f} + {self.text_space} {self.text_weight:.2f}"


class PossibleDuplicate(models.Model):
    """Two products whose pictures look nearly identical in some image space (``search.assistants.duplicates``),
    for staff to review. One row per pair of products, whichever of them was embedded first, the lower id first;
    a pair staff called "not a duplicate" keeps its row (and its status), so it is never raised again."""

    class Status(models.TextChoices):
        OPEN = "open", "to review"
        NOT_DUPLICATE = "not_duplicate", "not a duplicate"
        MERGED = "merged", "merged"
        HIDDEN = "hidden", "one hidden"

    product_low = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="+")
    product_high = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="+")
    # The two pictures that matched best (set null if one goes: the pair and its decision stay).
    image_low = models.ForeignKey(ProductImage, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    image_high = models.ForeignKey(ProductImage, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    scores = models.JSONField(default=dict, help_text="The best cosine of the pair in each space that flagged it.")
    score = models.FloatField(help_text="The highest of those cosines.")
    space = models.CharField(max_length=32, help_text="The space of the highest cosine.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    found_at = models.DateTimeField(auto_now_add=True)
    reviewed_at = models.DateTimeField(null=True, blank=True)
    reviewed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["-score", "-pk"]
        verbose_name = "possible duplicate"
        constraints = [
            models.UniqueConstraint(fields=["product_low", "product_high"], name="possible_duplicate_unique_pair"),
            models.CheckConstraint(
                condition=Q(product_low__lt=models.F("product_high")), name="possible_duplicate_ordered_pair"
            ),
        ]
        indexes = [models.Index(fields=["status", "-score"], name="possible_duplicate_status")]

    def __str__(self) -> str:
        return f"products {self.product_low_id} and {self.product_high_id} ({self.score:.3f} in {self.space})"


class SearchEvent(models.Model):
    """One shopper search (``search.assistants.insight``), written after the response: what was asked, how many
    results and how good the best was, and which result was clicked. No personal data: ``session`` is a hash that
    changes every day; rows older than ``VITRINE_INSIGHT_RETENTION_DAYS`` are deleted by the sweep."""

    class Kind(models.TextChoices):
        TEXT = "text", "text"
        PHOTO = "photo", "photo"

    token = models.CharField(max_length=32, unique=True, help_text="Names the search in its result links.")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    query = models.CharField(max_length=200, blank=True, help_text="Lower-cased; empty for a photo.")
    results = models.PositiveIntegerField()
    top_score = models.FloatField(null=True, blank=True)
    no_good_match = models.BooleanField(default=False)
    session = models.CharField(max_length=16, help_text="Daily-rotated hash; never the same two days running.")
    created_at = models.DateTimeField(db_index=True)
    clicked_product = models.ForeignKey(Product, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    clicked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["kind", "query", "created_at"], name="search_event_query")]

    def __str__(self) -> str:
        return f"{self.kind} search {self.query!r}: {self.results} results"


class InsightSwitch(models.Model):
    """Staff's switch for recording searches (one row)."""

    recording = models.BooleanField(default=True)
    changed_at = models.DateTimeField(auto_now=True)
    changed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    def __str__(self) -> str:
        return "recording searches" if self.recording else "not recording searches"


# A read done before every Milvus search (search.vectorstores.milvus), as a plain statement (see product_vector); the
# image one is search.vectorstores.sql.product_vector_sql, shared with the pgvector statements.
_TEXT_VECTOR_SQL = (
    f"SELECT vector FROM {ProductEmbedding._meta.db_table} "
    "WHERE product_id = %s AND space = %s AND model_version = %s AND status = %s"
)
