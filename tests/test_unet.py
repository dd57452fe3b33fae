"""Tests for the SSL4MIS-style 2D U-Net and its MC-Net+ / URPC / UniMatch variants."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.networks import (
    DeepSupervisionUNet,
    MultiDecoderUNet,
    UNet,
    UNetConfig,
    UNetDecoder,
    UNetEncoder,
    count_parameters,
    init_weights,
)

FULL = UNetConfig()
TINY = UNetConfig(in_channels=2, num_classes=3, widths=(4, 8, 16))
SSL4MIS_PARAMS_1CH_4CLS = 1_813_764


def _x(config: UNetConfig, size: int = 64, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, config.in_channels, size, size)


@pytest.mark.parametrize("config,size", [(FULL, 64), (TINY, 16)])
def test_unet_shapes(config: UNetConfig, size: int) -> None:
    model = UNet(config)
    x = _x(config, size)
    out = model(x)
    assert out.shape == (2, config.num_classes, size, size)
    feats = model.forward_features(x)
    assert len(feats) == len(config.widths)
    for level, (f, w) in enumerate(zip(feats, config.widths)):
        assert f.shape == (2, w, size // 2**level, size // 2**level)
    assert model.decode(feats).shape == out.shape


def test_non_square_input() -> None:
    out = UNet(TINY)(torch.randn(1, 2, 8, 20))
    assert out.shape == (1, 3, 8, 20)


def test_parameter_count_matches_ssl4mis() -> None:
    n = count_parameters(UNet(UNetConfig(in_channels=1, num_classes=4)))
    assert 1_700_000 <= n <= 1_900_000
    assert n == SSL4MIS_PARAMS_1CH_4CLS


def test_count_parameters_trainable_only() -> None:
    model = UNet(TINY)
    total = count_parameters(model)
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    assert count_parameters(model) == total - count_parameters(model.encoder, False)
    assert count_parameters(model, trainable_only=False) == total


def test_ssl4mis_dropout_schedule() -> None:
    def rates(module: nn.Module) -> list[float]:
        return [m.p for m in module.modules() if isinstance(m, nn.Dropout)]

    model = UNet(FULL)
    assert rates(model.encoder) == [0.05, 0.1, 0.2, 0.3, 0.5]
    assert set(rates(model.decoder)) == {0.0}
    assert UNetConfig(widths=(4, 8, 16)).encoder_dropout() == (0.05, 0.1, 0.2)
    assert UNetConfig(widths=(2,) * 6).encoder_dropout()[-2:] == (0.5, 0.5)


def test_conv_block_layout() -> None:
    block = UNet(FULL).encoder.in_conv.conv_conv
    kinds = [type(m) for m in block]
    assert kinds == [
        nn.Conv2d,
        nn.BatchNorm2d,
        nn.LeakyReLU,
        nn.Dropout,
        nn.Conv2d,
        nn.BatchNorm2d,
        nn.LeakyReLU,
    ]
    assert block[0].kernel_size == (3, 3) and block[0].padding == (1, 1)
    out_conv = UNet(FULL).decoder.out_conv
    assert out_conv.kernel_size == (3, 3) and out_conv.out_channels == 4


def test_default_upsampling_is_1x1_then_bilinear() -> None:
    up = UNet(FULL).decoder.ups[0]
    assert isinstance(up.conv1x1, nn.Conv2d) and up.conv1x1.kernel_size == (1, 1)
    assert isinstance(up.up, nn.Upsample) and up.up.mode == "bilinear"
    assert up.up.align_corners is True


def test_deterministic_given_seed() -> None:
    def run() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        torch.manual_seed(0)
        model = UNet(TINY).train()
        x = _x(TINY, 16)
        return model.state_dict(), model(x)

    sd1, out1 = run()
    sd2, out2 = run()
    assert sd1.keys() == sd2.keys()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    assert torch.equal(out1, out2)


def test_eval_is_deterministic_and_train_uses_dropout() -> None:
    torch.manual_seed(0)
    model = UNet(TINY)
    x = _x(TINY, 16)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    model.train()
    with torch.no_grad():
        assert not torch.allclose(model(x), model(x))


def test_multi_decoder_mcnet() -> None:
    torch.manual_seed(0)
    modes = ("transpose", "bilinear", "nearest")
    model = MultiDecoderUNet(FULL, upsample_modes=modes).eval()
    assert len(model.decoders) == 3

    up_types = [type(d.ups[0].up) for d in model.decoders]
    assert up_types == [nn.ConvTranspose2d, nn.Upsample, nn.Upsample]
    assert model.decoders[0].ups[0].conv1x1 is None
    assert [d.ups[0].up.mode for d in model.decoders[1:]] == ["bilinear", "nearest"]

    expected = count_parameters(UNetEncoder(FULL)) + sum(
        count_parameters(UNetDecoder(FULL, upsample=m)) for m in modes
    )
    assert count_parameters(model) == expected
    assert count_parameters(model) == count_parameters(model.encoder) + sum(
        count_parameters(d) for d in model.decoders
    )

    x = _x(FULL, 64)
    with torch.no_grad():
        outs = model(x)
    assert len(outs) == 3
    assert all(o.shape == (2, 4, 64, 64) for o in outs)
    for i in range(3):
        for j in range(i + 1, 3):
            assert not torch.allclose(outs[i], outs[j])


def test_multi_decoder_shares_encoder_features() -> None:
    torch.manual_seed(0)
    model = MultiDecoderUNet(TINY, upsample_modes=("bilinear", "bilinear")).eval()
    model.decoders[1].load_state_dict(model.decoders[0].state_dict())
    with torch.no_grad():
        a, b = model(_x(TINY, 16))
    assert torch.equal(a, b)


def test_multi_decoder_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="upsample"):
        MultiDecoderUNet(TINY, upsample_modes=("bilinear", "bicubic"))


@pytest.mark.parametrize("config,size", [(FULL, 64), (TINY, 16)])
def test_deep_supervision_shapes(config: UNetConfig, size: int) -> None:
    model = DeepSupervisionUNet(config)
    outs = model(_x(config, size))
    assert len(outs) == len(config.widths) - 1
    assert all(o.shape == (2, config.num_classes, size, size) for o in outs)


def test_deep_supervision_heads_and_perturbation() -> None:
    torch.manual_seed(0)
    config = UNetConfig(widths=(4, 8, 16, 32, 64), dropout=(0.0,) * 5)
    model = DeepSupervisionUNet(config)
    heads = model.decoder.aux_heads
    assert heads is not None
    assert [h.in_channels for h in heads] == [32, 16, 8]
    x = _x(config, 32)

    model.train()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.equal(a[0], b[0])
    for aux_a, aux_b in zip(a[1:], b[1:]):
        assert not torch.allclose(aux_a, aux_b)

    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert all(torch.equal(p, q) for p, q in zip(a, b))

    plain = UNet(config).eval()
    plain.encoder.load_state_dict(model.encoder.state_dict())
    plain.decoder.load_state_dict(model.decoder.state_dict(), strict=False)
    with torch.no_grad():
        assert torch.allclose(plain(x), a[0])


def test_deep_supervision_order_is_main_then_finest_to_coarsest() -> None:
    model = DeepSupervisionUNet(FULL).eval()
    heads = model.decoder.aux_heads
    assert heads is not None
    with torch.no_grad():
        for i, head in enumerate(heads):
            head.weight.zero_()
            head.bias.fill_(float(i + 1))
        outs = model(_x(FULL, 32, batch=1))
    consts = [float(o.mean()) for o in outs[1:]]
    assert consts == [3.0, 2.0, 1.0]
    assert all(torch.all(o == o.flatten()[0]) for o in outs[1:])


def test_deep_supervision_transpose_option() -> None:
    model = DeepSupervisionUNet(TINY, upsample="transpose")
    assert all(isinstance(u.up, nn.ConvTranspose2d) for u in model.decoder.ups)


@pytest.mark.parametrize("train", [True, False])
def test_unimatch_feature_perturbation(train: bool) -> None:
    torch.manual_seed(0)
    model = UNet(TINY).train(train)
    x = _x(TINY, 16)
    with torch.no_grad():
        result = model(x, feature_perturbation=True)
    assert isinstance(result, tuple) and len(result) == 2
    clean, perturbed = result
    assert clean.shape == perturbed.shape == (2, 3, 16, 16)
    assert not torch.allclose(clean, perturbed)
    if not train:
        with torch.no_grad():
            assert torch.allclose(clean, model(x), atol=1e-6)


@pytest.mark.parametrize(
    "shape", [(1, 1, 60, 64), (1, 1, 64, 48 + 8), (1, 1, 8, 8), (1, 2, 64, 64), (1, 64, 64)]
)
def test_bad_input_raises(shape: tuple[int, ...]) -> None:
    model = UNet(FULL)
    with pytest.raises(ValueError, match=r"shape"):
        model(torch.randn(*shape))


def test_bad_size_message_mentions_requirement() -> None:
    with pytest.raises(ValueError, match=r"\(1, 1, 30, 32\).*divisible by 2\*\*\(depth-1\) = 16"):
        UNet(FULL)(torch.randn(1, 1, 30, 32))
    with pytest.raises(ValueError, match="divisible"):
        DeepSupervisionUNet(TINY)(torch.randn(1, 2, 18, 16))
    with pytest.raises(ValueError, match="divisible"):
        MultiDecoderUNet(TINY, ("bilinear",))(torch.randn(1, 2, 16, 14))


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        UNetConfig(widths=(16,))
    with pytest.raises(ValueError):
        UNetConfig(widths=(4, 8), dropout=(0.1,))
    with pytest.raises(ValueError):
        UNetConfig(upsample="bicubic")


def test_init_weights_kaiming_and_xavier_differ() -> None:
    torch.manual_seed(0)
    a = init_weights(UNet(TINY), "kaiming")
    torch.manual_seed(0)
    b = init_weights(UNet(TINY), "xavier")
    wa = a.encoder.in_conv.conv_conv[0].weight
    wb = b.encoder.in_conv.conv_conv[0].weight
    assert not torch.allclose(wa, wb)
    with pytest.raises(ValueError):
        init_weights(UNet(TINY), "orthogonal")


def test_no_device_code_in_module() -> None:
    import inspect

    import bench.networks.unet as unet

    src = inspect.getsource(unet)
    assert ".cuda(" not in src
    assert "torch.device(" not in src
