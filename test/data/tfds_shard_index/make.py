"""How the shards here were made: by tensorflow-datasets itself (4.9.10, TensorFlow 2.21), in a
separate environment (`pip install tensorflow-datasets tensorflow-cpu`), not by our code.

Five Language-Table-schema episodes in three shards named by the template RLDS writers use,
{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_INDEX}; dataset_info.json and features.json are TFDS's own
(`tfds.folder_dataset.write_metadata`), and expected.json is what TFDS reads back from them.

    python make.py OUT_DIR
"""
import json
import sys

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import naming

TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_INDEX}"
out = epath.Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
vector = tfds.features.Tensor(shape=(2,), dtype=np.float32)
features = tfds.features.FeaturesDict({
    "episode_id": tfds.features.Text(),
    "steps": tfds.features.Dataset({
        "action": vector, "is_first": np.bool_, "is_last": np.bool_, "is_terminal": np.bool_,
        "reward": np.float32,
        "observation": {
            "effector_target_translation": vector, "effector_translation": vector,
            "instruction": tfds.features.Tensor(shape=(512,), dtype=np.int32),
            "rgb": tfds.features.Image(shape=(8, 12, 3), encoding_format="png"),
        },
    }),
})
rng = np.random.default_rng(0)
episodes = []
for e in range(5):
    text = f"push the red moon to the blue cube, take {e}".encode()
    codes = np.zeros(512, np.int32)
    codes[:len(text)] = np.frombuffer(text, np.uint8)
    n = 3 + e
    episodes.append({"episode_id": f"episode-{e}", "steps": [{
        "action": rng.uniform(-0.1, 0.1, 2).astype(np.float32), "is_first": t == 0,
        "is_last": t == n - 1, "is_terminal": t == n - 1, "reward": float(t == n - 1),
        "observation": {
            "effector_target_translation": rng.uniform(0, 0.5, 2).astype(np.float32),
            "effector_translation": rng.uniform(0, 0.5, 2).astype(np.float32),
            "instruction": codes, "rgb": rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)},
    } for t in range(n)]})
template = naming.ShardedFileTemplate(data_dir=out, template=TEMPLATE,
                                      dataset_name="language_table", split="train",
                                      filetype_suffix="tfrecord")
for i, shard in enumerate([episodes[:2], episodes[2:4], episodes[4:]]):
    with tf.io.TFRecordWriter(str(template.sharded_filepath(shard_index=i, num_shards=3))) as w:
        for episode in shard:
            w.write(features.serialize_example(episode))
tfds.folder_dataset.write_metadata(data_dir=out, features=features, split_infos=None,
                                   filename_template=TEMPLATE, check_data=True)

expected = []
for ex in tfds.as_numpy(tfds.builder_from_directory(out).as_dataset(split="train")):
    steps = []
    for s in ex["steps"]:
        obs = s["observation"]
        steps.append({
            "action": s["action"].tolist(), "reward": float(s["reward"]),
            "is_first": bool(s["is_first"]), "is_last": bool(s["is_last"]),
            "is_terminal": bool(s["is_terminal"]),
            "effector_translation": obs["effector_translation"].tolist(),
            "effector_target_translation": obs["effector_target_translation"].tolist(),
            "instruction": bytes(obs["instruction"][obs["instruction"] != 0].astype(np.uint8))
            .decode(),
            "rgb": obs["rgb"].tolist()})
    expected.append({"episode_id": ex["episode_id"].decode(), "steps": steps})
(out / "expected.json").write_text(json.dumps(expected))
