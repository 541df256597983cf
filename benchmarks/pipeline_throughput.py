"""Input pipeline throughput: the tf.data record pipeline vs a one-image-at-a-time scikit-image reference.

    python benchmarks/pipeline_throughput.py [--quick]

* tf.data: ``koala_utils.data.load`` on records cached in benchmarks/.cache (read the
  shards, decode the 224 px JPEGs, augment as in training or not, batch, Lab in
  TensorFlow), iterated on its own (no model);
* reference: for the same photos, one at a time, decode the original JPEG with Pillow,
  ``images.resize_pad`` to 224 and scikit-image ``rgb2lab``, then scale L and ab;
* the rate at which training consumes images (the bf16 train step on in-memory tensors,
  the fastest of the train steps), to show that the pipeline never starves it.
"""

import time

import _common


class Rate:
    """Images per wall second, and this process's CPU milliseconds per image, of a timed section."""

    def __init__(self, images):
        self.images = images

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu

    @property
    def img_s(self):
        return self.images / self.wall

    @property
    def cpu_ms(self):
        return 1000 * self.cpu / self.images

    def merged(self, other):
        both = Rate(self.images + other.images)
        both.wall, both.cpu = self.wall + other.wall, self.cpu + other.cpu
        return both


def pipeline_rate(records, batch, batches, augment, size=None):
    """Rate of ``data.load`` iterated alone, the first batch (start-up) excluded."""
    from koala_utils import data

    ds = data.load(records, "train", batch, shuffle=augment, augment=augment, image_size=size, repeat=True)
    iterator = iter(ds)
    next(iterator)
    with Rate(batches * batch) as rate:
        for _ in range(batches):
            x, _ = next(iterator)
        x["l"].numpy()
    return rate


def reference_one(path, size):
    """The per-photo numpy path: Pillow decode, resize_pad, skimage rgb2lab, scaling."""
    from koala_utils import color, images

    padded, _ = images.resize_pad(images.load_image(path), size)
    lab = color.rgb_to_lab(padded)
    return color.scale_l(lab[..., :1]).astype("float32"), color.scale_ab(lab[..., 1:]).astype("float32")


def reference_rate(paths, size):
    with Rate(len(paths)) as rate:
        for path in paths:
            reference_one(path, size)
    return rate


def cached_jpeg_reference_rate(records, limit):
    """The same numpy path on the cached 224 px JPEGs (no resize): what caching alone buys."""
    import io

    import numpy as np
    import tensorflow as tf
    from PIL import Image

    from koala_utils import color, data

    manifest = data.read_manifest(records)
    blobs = []
    for serialized in tf.data.TFRecordDataset(data.shard_files(records, "train")).take(limit):
        blobs.append(data._parse(serialized, manifest["embed_dim"])["image"].numpy())
    with Rate(len(blobs)) as rate:
        for blob in blobs:
            with Image.open(io.BytesIO(blob)) as img:
                rgb = np.asarray(img.convert("RGB"))
            lab = color.rgb_to_lab(rgb)
            color.scale_l(lab[..., :1]), color.scale_ab(lab[..., 1:])
    return rate


def train_consumption_rate(size, batch, steps):
    """img/s of the bf16 train step on one in-memory batch (the fastest consumer)."""
    import keras
    import tensorflow as tf

    from koala_utils.model import build_model

    model = build_model(dtype_policy="mixed_bfloat16")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    x = {"l": tf.random.uniform((batch, size, size, 1), -1, 1), "embedding": tf.random.normal((batch, 1000))}
    y = tf.random.uniform((batch, size, size, 2), -0.5, 0.5)
    model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * batch / (time.perf_counter() - start)


def run(quick=False):
    _common.quiet_tensorflow()
    if quick:
        cfg = {"photos": 32, "batch": 8, "batches": 3, "reference": 8, "train_size": 32, "train_steps": 2}
    else:
        cfg = {"photos": 200, "batch": 32, "batches": 25, "reference": 100, "train_size": 224, "train_steps": 3}
    records = _common.cached_records(cfg["photos"])
    paths = _common.sample_photos(cfg["photos"])[: cfg["reference"]]
    with _common.LoadMonitor() as load:
        ref = reference_rate(paths, 224)
        ref_cached = cached_jpeg_reference_rate(records, cfg["reference"])
        plain = pipeline_rate(records, cfg["batch"], cfg["batches"], augment=False)
        augmented = pipeline_rate(records, cfg["batch"], cfg["batches"], augment=True)
        ref_again = reference_rate(paths, 224)
        small_batch = pipeline_rate(records, 8, cfg["batches"], augment=True)
        consume = train_consumption_rate(cfg["train_size"], 8, cfg["train_steps"])
    ref = ref.merged(ref_again)
    slowest = min(plain.img_s, augmented.img_s, small_batch.img_s)
    figures = {
        "pipeline_img_s": plain.img_s,
        "pipeline_augmented_img_s": augmented.img_s,
        "pipeline_augmented_batch8_img_s": small_batch.img_s,
        "reference_img_s": ref.img_s,
        "reference_cached_jpeg_img_s": ref_cached.img_s,
        "speedup": augmented.img_s / ref.img_s,
        "speedup_plain": plain.img_s / ref.img_s,
        "speedup_cpu_time": ref.cpu_ms / augmented.cpu_ms,
        "pipeline_augmented_cpu_ms": augmented.cpu_ms,
        "reference_cpu_ms": ref.cpu_ms,
        "train_consumption_img_s": consume,
        "pipeline_over_consumption": slowest / consume,
    }

    def row(label, rate):
        return [label, rate.img_s, rate.cpu_ms, rate.img_s / ref.img_s, ref.cpu_ms / rate.cpu_ms]

    rows = [
        row("scikit-image reference, original JPEG (1 at a time)", ref),
        row("scikit-image reference, cached 224 px JPEG (1 at a time)", ref_cached),
        row(f"tf.data data.load, no augmentation, batch {cfg['batch']}", plain),
        row(f"tf.data data.load, augmented as in training, batch {cfg['batch']}", augmented),
        row("tf.data data.load, augmented, batch 8", small_batch),
        [f"training consumes (bf16 train step, {cfg['train_size']} px, batch 8)", consume, None, consume / ref.img_s,
         None],
    ]
    return {
        "name": "pipeline_throughput",
        "title": "Input pipeline throughput (224 px, Lab, batched)",
        "headers": ["path", "img/s", "CPU ms / img", "x reference", "x reference, CPU time"],
        "rows": rows,
        "figures": figures,
        "other_cores": load.other_cores,
        "targets": [
            _common.target("tf.data (augmented) / reference", figures["speedup"], ">=", 4.0),
            _common.target("tf.data (augmented) / reference, CPU time", figures["speedup_cpu_time"], ">=", 4.0),
            _common.target("slowest pipeline / training consumption", figures["pipeline_over_consumption"], ">=", 1.0),
        ],
        "notes": [
            f"{len(paths)} imagenet_sample_1000 photos for the reference, {cfg['photos']} in the records",
            f"the pipeline needs ~{100 / figures['pipeline_over_consumption']:.1f} % of the CPU to feed the fastest "
            "train step",
            "img/s: both sides use all the cores they can get (tf.data its thread pool, the reference one Python "
            "thread); CPU ms / img: this process's CPU time per image, whatever the number of threads",
        ],
        "software": _common.software(),
    }


def main(argv=None):
    return _common.main(run, __doc__, argv)


if __name__ == "__main__":
    main()
