"""Keeping vectors current: what a catalogue change queues, embedding one item or many, versions, reindex
jobs and the sweep. Writes only; what shoppers ask is in ``search.querying``.

enqueue    task names, sending them, and the receivers of catalog's signals (on commit)
sources    what a space embeds: an image's pixels, a product's text
versions   spaces' availability, model versions, activation, counts
embedding  one image or one product in one space
bulk       many items at once (decode threads, encoding streams, batched writes); store rebuilds
jobs       reindex jobs and their chunks
sweep      the periodic catch-up
"""
