"""``manage.py benchmark``: scripts that print figures, each measured side by side in one run.

pipeline    raw forward pass vs the whole reindex path; upload-to-searchable latency
runtimes    eager PyTorch vs ONNX fp32 vs int8, per space
quality     recall@10 of similar products against exact search; photo self-retrieval
synthetic   a synthetic catalogue of clustered vectors, at scale
load        gunicorn + locust against the shop
stores      the vector stores on the same synthetic vectors (stores_data, stores_pgvector, stores_milvus)
"""
