"""Parameter counts and MACs of every bundled spec against the published figures
(docs/REFERENCE.md: torchvision's model docs, He et al. 2015 and 2016)."""
from __future__ import annotations

import pytest

import resdsl
from conftest import SPECS

# spec: (params, GMACs, digits the source publishes the GMACs to); None where no figure exists.
PUBLISHED = {
    "specs/resnet18.rds": (11_689_512, 1.81, 2),
    "specs/resnet34.rds": (21_797_672, 3.66, 2),
    "specs/resnet50.rds": (25_557_032, 4.09, 2),
    "specs/resnet101.rds": (44_549_160, 7.80, 2),
    "specs/resnet152.rds": (60_192_808, 11.51, 2),
    "specs/resnext50_32x4d.rds": (25_028_904, 4.23, 2),
    "specs/wide_resnet50_2.rds": (68_883_240, 11.40, 2),
    "specs/resnext101_32x8d.rds": (88_791_336, 16.41, 2),
    "specs/wide_resnet101_2.rds": (126_886_696, 22.75, 2),
    # v1: the paper's exact conv+fc count; same parameters as v1.5.
    "specs/resnet50_v1.rds": (25_557_032, 3.86, 2),
    "specs/resnet50_os8.rds": (25_557_032, None, None),  # dilation keeps the parameters
    "specs/resnet50_backbone.rds": (23_508_032, 4.09, 2),  # ResNet-50 without its fc
    # torchvision's model docs (GFLOPS there are multiply-accumulates).
    "specs/vgg11.rds": (132_863_336, 7.61, 2),
    "specs/vgg16.rds": (138_357_544, 15.47, 2),
    "specs/vgg19.rds": (143_667_240, 19.63, 2),
    "specs/vgg16_bn.rds": (138_365_992, 15.47, 2),
    "specs/alexnet.rds": (61_100_840, 0.71, 2),
    "specs/squeezenet1_0.rds": (1_248_424, 0.82, 2),
    "specs/densenet121.rds": (7_978_856, 2.83, 2),
    "specs/googlenet.rds": (6_624_904, 1.50, 2),
    "specs/inception_v3.rds": (23_834_568, 5.71, 2),
    "specs/mobilenet_v2.rds": (3_504_872, 0.30, 2),
    "specs/mobilenet_v3_large.rds": (5_483_032, 0.22, 2),
    "specs/regnet_y_400mf.rds": (4_344_144, 0.40, 2),
    "specs/tv_efficientnet_b0.rds": (5_288_548, 0.39, 2),
    "specs/tv_convnext_tiny.rds": (28_589_128, 4.46, 2),
    "specs/shufflenet_v2_x0_5.rds": (1_366_792, 0.04, 2),
    # timm's modules (their own parameter counts).
    "specs/resnet18d.rds": (11_708_744, None, None),
    "specs/resnet50d.rds": (25_576_264, None, None),
    "specs/seresnet50.rds": (28_088_024, None, None),
    "specs/seresnext50_32x4d.rds": (27_559_896, None, None),
    "specs/resnetv2_50.rds": (25_549_352, None, None),
    # timm's modules as dumped in tests/peers (their parameter counts; test_peers.py checks the rest).
    "specs/resnet10t.rds": (5_435_488, None, None),
    "specs/resnet50_gn.rds": (25_557_032, None, None),
    "specs/ecaresnet50d.rds": (25_576_350, None, None),
    "specs/resnetblur50.rds": (25_557_032, None, None),
    "specs/resnet26.rds": (15_995_176, None, None),
    "specs/resnet26d.rds": (16_014_408, None, None),
    "specs/resnet50c.rds": (25_576_264, None, None),
    "specs/resnet50t.rds": (25_573_728, None, None),
    "specs/resnet152d.rds": (60_212_040, None, None),
    "specs/resnetrs50.rds": (35_691_912, None, None),
    "specs/efficientnet_b0.rds": (5_288_548, None, None),
    "specs/mobilenetv3_large_100.rds": (5_483_032, None, None),
    "specs/regnety_016.rds": (11_202_430, None, None),
    "specs/skresnet18.rds": (11_958_056, None, None),
    "specs/resnest14d.rds": (10_611_688, None, None),
    "specs/res2net50_26w_4s.rds": (25_699_120, None, None),
    "specs/convnext_tiny.rds": (28_589_128, None, None),
    "specs/cifar/wrn28_10.rds": (36_479_194, None, None),  # Zagoruyko & Komodakis 2016
    "specs/cifar/resnet20.rds": (269_722, None, None),
    "specs/cifar/resnet32.rds": (464_154, None, None),
    "specs/cifar/resnet44.rds": (658_586, None, None),
    "specs/cifar/resnet56.rds": (853_018, None, None),
    "specs/cifar/resnet110.rds": (1_727_962, None, None),
    "specs/cifar/resnet110_stochastic_depth.rds": (1_727_962, None, None),  # Huang et al. 2016
    "specs/cifar/resnet1202.rds": (19_421_274, None, None),
}

def test_alexnet_paper_has_the_papers_60_million_parameters() -> None:
    # Krizhevsky et al. 2012: "60 million parameters"; the exact count follows from its layer sizes
    # (conv2/4/5 grouped in two, one group per GPU): 34,944 + 307,456 + 885,120 + 663,936 + 442,624
    # in the convs, 37,752,832 + 16,781,312 + 4,097,000 in the fully-connected layers.
    net = resdsl.load("specs/alexnet_paper.rds")
    assert net.params == 60_965_224
    assert round(net.params / 1e7) == 6
    assert net.graph.shape("pool5") == (256, 6, 6)  # the 6x6x256 the paper's fc6 reads


# Published to one decimal in millions ("~1.7M", "~10.3M").
APPROXIMATE = {
    "specs/cifar/preact_resnet164.rds": 1.7e6,
    "specs/cifar/preact_resnet1001.rds": 10.3e6,
}


@pytest.mark.parametrize("spec", sorted(PUBLISHED))
def test_published_params_and_macs(spec: str) -> None:
    params, gmacs, digits = PUBLISHED[spec]
    net = resdsl.load(spec)
    assert net.params == params
    if gmacs is not None:
        assert round(net.macs / 1e9, digits) == gmacs


@pytest.mark.parametrize("spec", sorted(APPROXIMATE))
def test_preact_params_match_paper_precision(spec: str) -> None:
    assert round(resdsl.load(spec).params / 1e5) * 1e5 == APPROXIMATE[spec]


def test_paper_table1_gmacs_v1() -> None:
    # Table 1 of He et al. 2015 rounds to one decimal: ResNet-50 v1 "3.8" x 10^9.
    assert int(resdsl.load("specs/resnet50_v1.rds").macs / 1e8) == 38


def test_plain_nets_are_resnets_without_shortcuts() -> None:
    # Same stacks: the plain net has no projections, so the difference is exactly their weights.
    for plain, res in (("plain18", "resnet18"), ("plain34", "resnet34")):
        p, r = resdsl.load(f"specs/{plain}.rds"), resdsl.load(f"specs/{res}.rds")
        projections = [n for n in r.graph.order() if ".downsample." in n]
        proj_params = sum(row["params"] for row in r.summary()["layers"] if row["name"] in projections)
        assert r.params - p.params == proj_params > 0
        assert not any(op == "add" for op in (p.graph.node(n).op for n in p.graph.order()))


def test_option_b_adds_about_3k_params_to_cifar_resnets() -> None:
    # REFERENCE.md: "Option B adds about 3K parameters to these networks."
    a = resdsl.load("specs/cifar/resnet20.rds")
    text = open("specs/cifar/resnet20.rds").read().replace("shortcut A", "shortcut B")
    b = resdsl.loads(text, "resnet20_b.rds", "specs/cifar")
    assert 2_500 < b.params - a.params < 3_500


def test_every_bundled_spec_is_covered() -> None:
    covered = set(PUBLISHED) | set(APPROXIMATE) | {
        "specs/plain18.rds", "specs/plain34.rds", "specs/cifar/plain20.rds", "specs/cifar/plain56.rds",
        "specs/cifar/highway20.rds", "specs/alexnet_paper.rds"}
    assert {str(s) for s in SPECS} <= covered
