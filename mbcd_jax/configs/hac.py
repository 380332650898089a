r"""HAC (human / animal / cartoon), multi-source protocol, MBCD with the paper's recipe.

  # Embedded synthetic HAC-shaped benchmark, no download (~4 min on 2 CPU cores):
  python -m mbcd_jax.main --config=configs/hac.py:synthetic --workdir=runs/demo
  # Real HAC, prepared with `python -m mbcd_jax.data.prepare --dataset=hac ...`:
  python -m mbcd_jax.main --config=configs/hac.py --config.data.dir=/data/hac_prepared \
      --config.data.sources=animal,cartoon --config.data.target=human --workdir=runs/hac_h

Arguments after ':' (comma separated): ``synthetic`` (embedded benchmark), ``short`` (with
``synthetic``: 400 steps instead of the paper's 2000), ``scratch`` (the earlier random-trunk
regime), ``smoke`` (tiny shapes, 1 epoch: for tests). Method switches: ``--config.method.name=erm|ema|mbcd|…``
(see mbcd_jax/methods.py), ``--config.method.amd=…``, ``--config.method.consistency=…``.
"""
import ml_collections
from ml_collections import config_dict

from mbcd_jax import config_lib
from mbcd_jax.synthetic import pretrain

# The paper-regime embedded benchmark's length and EMA decay: the paper's ~2000 steps with
# beta = 0.999 (a run of two EMA horizons), 100 epochs of 20 steps (2 sources x 160 examples /
# batch 16). ``short``: the earlier default, 400 steps with beta = 1 - 2 / 400 = 0.995 (the
# same run-length / horizon ratio), which docs/study/paper_regime/ found does not preserve
# MBCD's behaviour (docs/benchmark.md). Beta is resolved from the ratio and the run's final
# length (config_lib.derive_from_length): --config.train.epochs=N keeps the ratio.
SYNTHETIC_EPOCHS = 100
SHORT_EPOCHS = 20
EMA_HORIZON_RATIO = 2.0


def paper_encoders() -> ml_collections.ConfigDict:
  """The peers' Kinetics-400 / VGGSound encoders, pretrained weights converted with
  ``python -m mbcd_jax.encoders.convert``. Every setting of each encoder is declared here so
  that any of them can be set from the command line
  (``--config.model.encoders.video.resample_rate=4``); the values are those of the released
  checkpoints, and a converted file refuses to load into an encoder built with other values."""
  return ml_collections.ConfigDict(dict(
      # mmaction2 slowfast_r101_8x8x1_256e_kinetics400_rgb: 32x224x224 RGB -> 2304-d.
      video=dict(
          name='slowfast_r101',
          pretrained='',           # converted .msgpack (or a .pth, converted on the fly)
          depth=101,               # ResNet depth of both pathways
          slow_base_channels=64,   # slow stem width (channels); fast = this / channel_ratio
          resample_rate=4,         # tau: input frames per slow frame (8 slow of 32)
          speed_ratio=4,           # alpha: fast frames per slow frame (fast stride tau/alpha)
          channel_ratio=8,         # 1/beta: slow / fast channel ratio
          fusion_kernel=7,         # lateral fast->slow conv kernel, in fast frames
          remat=False,             # recompute layer4 blocks in the backward pass (memory)
          dtype='float32',         # compute dtype: float32 | bfloat16 (params stay float32)
      ),
      # mmaction2 slowonly_r50_8x8x1_256e_kinetics400_flow: 8x224x224 (x, y) flow -> 2048-d.
      flow=dict(
          name='slowonly_r50_flow',
          pretrained='',
          depth=50,                # ResNet depth
          base_channels=64,        # stem width (channels); feature = 32 x this
          remat=False,
          dtype='float32',
      ),
      # VGGSound vggsound_avgpool ResNet-18: 257x1004 log-spectrogram -> 512-d.
      audio=dict(
          name='vggsound_r18',
          pretrained='',
          width=64,                # layer1 width (channels); feature = 8 x this
          remat=False,
          dtype='float32',
      ),
  ))


def synthetic_encoders() -> ml_collections.ConfigDict:
  """CPU-sized encoders: frozen conv trunk (~80% of FLOPs) + trainable last stage."""
  # bn: BatchNorm after every conv (off: the benchmark's encoders carry none; on, to compare
  # --config.model.bn_mode=port vs frozen).
  return ml_collections.ConfigDict(dict(
      video=dict(name='frame_cnn', trunk_widths=(32, 32, 48), trunk_strides=(1, 2, 2),
                 width=64, bn=False),
      flow=dict(name='frame_cnn', trunk_widths=(32, 32, 48), trunk_strides=(1, 2, 2),
                width=64, bn=False),
      audio=dict(name='spec_cnn', trunk_widths=(16, 32, 48), trunk_strides=(1, 2, 2),
                 width=64, bn=False),
  ))


def apply_synthetic(c: ml_collections.ConfigDict, smoke: bool = False, scratch: bool = False,
                    short: bool = False):
  """Switches a paper config to the embedded benchmark (shared by hac.py and epic.py).

  Default: the paper's regime (docs/benchmark.md). Encoders with BatchNorm, pretrained on a
  synthetic upstream task (``mbcd_jax/synthetic/pretrain.py``, cached on disk), trunk frozen, last stage
  and heads fine-tuned with the paper's recipe; a world whose target styles lie between the
  sources' (``data.synthetic.styles='interpolated'``).
  ``short``: the same at 400 steps, beta 0.995 (the default before the paper-regime study's
  2000-step runs; its tables reproduce with it).
  ``scratch`` (and ``smoke``): the earlier regime of docs/study/ — random frozen BN-free
  trunks, lr 1e-3, beta 0.99, fixed per-domain styles, 400 steps.
  """
  if short and (smoke or scratch):
    raise ValueError("configs: 'short' applies to the paper-regime benchmark only "
                     "(':synthetic,short'); 'scratch' and 'smoke' have their own lengths")
  c.data.source = 'synthetic'   # knobs: config.data.synthetic (config_lib.synthetic_config)
  c.model.encoders = synthetic_encoders()
  c.model.head_hidden = 128
  # DSU is the port's addition for its pretrained nets, not the paper's: off for MBCD and its
  # baselines here (the peers' own variant has none anyway).
  c.model.defaults.dsu = False
  # The random trunks stand in for the pretrained checkpoint, which the paper's seeds share:
  # fixed here, so a training seed varies only what trains (stage, heads, dropout, data order).
  c.model.trunk_seed = 0
  # 2000 steps in the paper's regime, 400 with ``short`` and in the earlier regime.
  epochs = SYNTHETIC_EPOCHS if not (short or smoke or scratch) else SHORT_EPOCHS
  c.train.epochs = epochs
  # CMRF's SMA teacher starts averaging at 10% of the run, the share of the run the authors'
  # EPIC value (400 steps) is of their 15-epoch EPIC runs (7-11%). Resolved from the final
  # epochs and batch size (config_lib.derive_from_length), so overrides keep the share.
  c.method.cmrf.sma_start_step = config_dict.placeholder(int)
  c.method.cmrf.sma_start_percent = 10
  if not (smoke or scratch):
    for m in ('video', 'flow', 'audio'):
      c.model.encoders[m].bn = True
      c.model.encoders[m].pretrained = 'synthetic'   # mbcd_jax/synthetic/pretrain.py, cached
    c.model.pretrain = pretrain.pretrain_config()
    # MBCD and its baselines: BN on the upstream running statistics, never updated (one trunk
    # pass for student and teacher): 1.5-1.8x faster on CPU than 'port', whose own comparison
    # here was a tie. A peer keeps its scripts' BN (video/flow 'port', audio trunk in eval
    # mode): on frozen statistics SimMMDG's and MOOSA's split-distance term runs away.
    c.model.defaults.bn_mode = 'frozen'
    c.data.synthetic.styles = 'interpolated'   # the world's principle: docs/benchmark.md
    # The paper's recipe (Adam 1e-4, wd 1e-4, batch 16, alpha 1e-4, lambda 1: the base
    # config's) at the paper's length (or ``short``), beta from EMA_HORIZON_RATIO (resolved
    # when the config is normalised, after the command line's overrides).
    c.method.ema_beta = config_dict.placeholder(float)
    c.method.ema_horizon_ratio = EMA_HORIZON_RATIO
    return
  # Running statistics only and no DSU: the scratch encoders carry no BN by default (so
  # 'port' would only cost time), and the numbers stay those of the BN-free, DSU-free model.
  c.model.defaults.bn_mode = 'frozen'
  # Trained from a random trunk instead of Kinetics weights: a larger step size.
  c.optim.lr = 1e-3
  # The paper runs ~2000-2500 steps with beta = 0.999 (EMA horizon 1000 steps); the synthetic
  # run has 400 steps, so beta keeps the same run-length / horizon ratio.
  c.method.ema_beta = 0.99
  if smoke:
    s = c.data.synthetic
    s.train_per_domain, s.test_per_domain = 16, 8
    s.video_shape, s.flow_shape, s.audio_shape = (2, 16, 16), (2, 16, 16), (16, 16)
    for m in ('video', 'flow'):
      c.model.encoders[m].trunk_widths = (8, 8)
      c.model.encoders[m].trunk_strides = (1, 2)
      c.model.encoders[m].width = 16
    c.model.encoders.audio.trunk_widths = (8, 8)
    c.model.encoders.audio.trunk_strides = (1, 2)
    c.model.encoders.audio.width = 16
    c.model.head_hidden = 16
    c.data.batch_size, c.data.eval_batch_size = 8, 8
    c.train.epochs = 1
    c.train.log_every = 1
    c.train.progress = False


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = config_lib.parse_config_arg(arg, 'configs/hac.py')
  c = config_lib.dataset_config('hac', sources=('animal', 'cartoon'), target='human')
  c.model.encoders = paper_encoders()
  c.method.cmrf.sma_start_step = 100   # CMRF's README commands on HAC
  if args:
    apply_synthetic(c, smoke='smoke' in args, scratch='scratch' in args, short='short' in args)
  return c
