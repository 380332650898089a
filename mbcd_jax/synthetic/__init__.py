"""The embedded benchmark's tools: the encoders' synthetic upstream pretraining (pretrain.py,
what ``config.model.encoders.<m>.pretrained='synthetic'`` loads) and the check that a world
satisfies the benchmark's principle (world_check.py). The benchmark's generator itself is a
data source, mbcd_jax/data/synthetic.py, read by the input pipeline like the real datasets;
docs/benchmark.md describes the benchmark.
"""
