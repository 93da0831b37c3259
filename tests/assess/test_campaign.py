from __future__ import annotations

import pytest

from dlsec.assess.campaign import CampaignError, default_campaign, load_campaign


def test_defaults_per_kind_and_access():
    image = default_campaign(kind="image")
    assert image.threat_model.access == "white-box" and "linf" in image.threat_model.norms
    assert image.attacks == ["apgd-ce", "apgd-t"]
    assert default_campaign(kind="tabular", access="score").attacks == ["square"]
    assert default_campaign(kind="image", access="decision").attacks == ["hsj"]
    assert image.fingerprint() == default_campaign(kind="image").fingerprint()


@pytest.mark.parametrize(
    "text, where",
    [
        ("threat_model:\n  norms:\n    linf: [0.1, -1]\n", ":3: threat_model.norms"),
        ("examples: 0\n", ":1: examples"),
        ("examples: 10\nattackz: [pgd]\n", ":2: attackz"),
        ("gates:\n  - metric: robust_accuracy\n    min: 0.5\n", ":2: gates.0"),
        ("gates:\n  - all_of: []\n", ":2: gates.0"),
        ("gates:\n  - metric: clean_accuracy\n", ":2: gates.0"),
        ("threat_model:\n  access: root\n", ":2: threat_model.access"),
        ("certification:\n  sigma: -1\n", ":2: certification.sigma"),
        ("corruptions:\n  severities: [7]\n", ":2: corruptions.severities"),
        ("threat_model: [\n", ":2: not valid YAML"),
        ("- a\n- b\n", ":1: a campaign is a mapping"),
    ],
)
def test_malformed_campaigns_name_the_line_and_field(tmp_path, text, where):
    path = tmp_path / "campaign.yaml"
    path.write_text(text)
    with pytest.raises(CampaignError) as info:
        load_campaign(path)
    assert where in str(info.value), str(info.value)


def test_valid_campaign_round_trip(tmp_path):
    path = tmp_path / "campaign.yaml"
    path.write_text("""
version: 1
threat_model:
  access: white-box
  norms:
    linf: [0.1, 0.05]
attacks: [pgd, apgd-ce]
attack_params:
  pgd: {steps: 10}
examples: 50
seed: 3
gates:
  - metric: robust_accuracy
    norm: linf
    eps: 0.1
    min: 0.6
  - any_of:
      - metric: clean_accuracy
        min: 0.9
      - metric: findings
        max: 3
""")
    campaign = load_campaign(path)
    assert campaign.threat_model.norms["linf"] == [0.05, 0.1]
    assert campaign.seed == 3 and len(campaign.gates) == 2 and campaign.gates[1].any_of is not None
