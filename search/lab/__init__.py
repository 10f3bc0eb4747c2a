"""Measuring and improving models, run from management commands only; the shop's code never imports this.

metrics      precision/recall/mAP and the shapes of results
evaluation   leave-one-out and text-query evaluation through the shoppers' search path (``evaluate``)
report       the HTML report of an evaluation (``evaluate --report``)
training     SimCLR fine-tuning on the catalogue's images (``train_simclr``)
quantization int8 kept only when evaluation says quality holds (``quantize``)
benchmarks/  throughput, latency, search quality, load, vector stores (``benchmark``)
"""
