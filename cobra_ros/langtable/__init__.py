"""Language-Table tools, no ROS imports.

- `tfrecord`: TFRecord framing (crc32c) and tf.train.Example encode/decode, TF-free.
- `rlds`: Language-Table RLDS episodes on disk (TFDS layout): `iter_episodes`, `write_rlds`.
- `bag`: image frames from ROS 2 bags (sqlite3 / MCAP) via rosbags, and a small writer.
- `sim`: Language-Table in PyBullet (`LangTableSim`): reset, step(action) at 10 Hz, frames and
  per-block ground truth; `sim.scenes` makes it the default scene source of `questions`.
- `world`: the 2-D look-alike (board, BLOCK_8 blocks, arm, camera) with per-block ground truth.
- `episodes`: scripted block-to-block pushing episodes exportable in the dataset schema.
- `questions`: descriptions, balanced yes/no relation and presence questions, open questions,
  `block_mentions`, `make_examples`.
- `replay`: `iter_frames(source)` over an RLDS dir, a bag or synthetic episodes; CLI to PNG /
  TFRecord.
"""
