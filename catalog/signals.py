"""What the catalogue announces when it changes. Other apps (``search``) subscribe; ``catalog`` imports none of them.

Every signal is sent by a service in ``catalog/services.py`` (or the admin's save hooks) *inside* the write's
transaction, with ids, never model instances: a receiver that has work to do after the data is visible
registers it with ``transaction.on_commit`` itself. Receivers must not raise for an outage of their own
(a broker that is down): the catalogue's write has to succeed without them.
"""

from __future__ import annotations

from django.dispatch import Signal

# An image was stored and attached to a product. kwargs: image_id, product_id.
image_added = Signal()

# A product's title or description was created or changed. kwargs: product_ids (a list).
product_text_changed = Signal()

# Products changed in a way that listings and filters see: price, stock, category, publication, their images,
# or existence (deleted). kwargs: product_ids (a list).
products_changed = Signal()

# A category was renamed or moved, so every product below it has a new category path. kwargs: category_path.
category_changed = Signal()
