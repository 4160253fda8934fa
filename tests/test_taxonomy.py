"""Category taxonomy and survey factors: shipped defaults, lookups, local files, bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridwatch.config import load_settings
from gridwatch.taxonomy import TaxonomyError, load_survey_factors, load_taxonomy

REQUIRED_CODES = {
    "theft",
    "burglary",
    "vehicle_theft",
    "pickpocketing",
    "robbery",
    "snatching",
    "fraud",
    "telecom_fraud",
    "drugs",
    "gambling",
    "prostitution",
    "assault",
    "homicide",
    "sexual_assault",
    "arson",
    "dispute",
    "public_order",
    "traffic",
    "fire",
    "other",
}
REQUIRED_GROUPS = {"two_robberies_one_theft", "vice", "serious", "property", "violent"}


def test_shipped_taxonomy_has_the_required_codes_and_groups():
    taxonomy = load_taxonomy()
    assert REQUIRED_CODES <= set(taxonomy.categories)
    assert REQUIRED_GROUPS <= set(taxonomy.groups)
    for group in taxonomy.groups.values():
        assert group["zh"] and group["en"]
    for category in taxonomy.categories.values():
        assert category.zh and category.en
        assert set(category.groups) <= set(taxonomy.groups)


def test_group_membership():
    taxonomy = load_taxonomy()
    assert set(taxonomy.in_group("two_robberies_one_theft")) == {
        "theft",
        "burglary",
        "vehicle_theft",
        "pickpocketing",
        "robbery",
        "snatching",
    }
    assert set(taxonomy.in_group("vice")) == {"drugs", "gambling", "prostitution"}
    assert {"homicide", "robbery", "sexual_assault", "arson"} <= set(taxonomy.in_group("serious"))
    assert {"assault", "homicide", "robbery"} <= set(taxonomy.in_group("violent"))
    assert {"theft", "fraud", "telecom_fraud"} <= set(taxonomy.in_group("property"))
    assert "other" not in taxonomy.in_group("property")
    with pytest.raises(KeyError):
        taxonomy.in_group("no_such_group")


@pytest.mark.parametrize(
    ("spelling", "code"),
    [
        ("theft", "theft"),
        ("盗窃", "theft"),
        ("Theft", "theft"),
        ("larceny", "theft"),
        ("Burglary", "burglary"),
        ("BURGLARY", "burglary"),
        (" burglary ", "burglary"),
        ("入室盗窃", "burglary"),
        ("入户盗窃", "burglary"),
        ("Vehicle theft", "vehicle_theft"),
        ("motor vehicle theft", "vehicle_theft"),
        ("盗窃电动车", "vehicle_theft"),
        ("电诈", "telecom_fraud"),
        ("吸毒", "drugs"),
        ("寻衅滋事", "public_order"),
        ("其它", "other"),
        ("ＢＵＲＧＬＡＲＹ", "burglary"),  # full-width letters, as typed with a Chinese IME
    ],
)
def test_resolve_any_spelling(spelling, code):
    assert load_taxonomy().resolve(spelling) == code


@pytest.mark.parametrize("spelling", ["", "not a category", "盗", None])
def test_resolve_unknown_is_none(spelling):
    assert load_taxonomy().resolve(spelling) is None


def test_shipped_survey_factors():
    factors = load_survey_factors()
    assert len(factors) == 25
    assert list(factors)[0] == "two_robberies_one_theft"
    for code in (
        "two_robberies_one_theft",
        "drugs",
        "gambling",
        "police_rarely_seen",
        "lack_of_cameras",
    ):
        assert code in factors
        assert factors[code].code == code
        assert factors[code].zh and factors[code].en
    assert factors["police_rarely_seen"].zh == "见警率低"


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_custom_taxonomy_file_replaces_the_default(tmp_path):
    path = write(
        tmp_path,
        "categories.yaml",
        """
groups:
  rural: {zh: 农村类, en: Rural}
categories:
  crop_theft:
    zh: 盗窃农作物
    en: Crop theft
    groups: [rural]
    aliases: [偷菜]
  livestock_theft: {zh: 盗窃牲畜, en: Livestock theft, groups: [rural]}
  other: {zh: 其他, en: Other}
""",
    )
    settings = load_settings({"GRIDWATCH_CATEGORIES_FILE": str(path)})
    taxonomy = load_taxonomy(settings.categories_file)
    assert set(taxonomy.categories) == {"crop_theft", "livestock_theft", "other"}
    assert taxonomy.resolve("偷菜") == "crop_theft"
    assert taxonomy.resolve("盗窃") is None  # the shipped list is replaced, not merged
    assert taxonomy.in_group("rural") == ["crop_theft", "livestock_theft"]


def test_custom_survey_factor_file(tmp_path):
    path = write(
        tmp_path,
        "factors.yaml",
        "factors:\n"
        "  noise: {zh: 噪音扰民, en: Noise}\n"
        "  stray_dogs: {zh: 流浪狗, en: Stray dogs}\n",
    )
    factors = load_survey_factors(path)
    assert list(factors) == ["noise", "stray_dogs"]
    assert factors["noise"].zh == "噪音扰民"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("not_yaml", "categories: [unclosed\n"),
        ("empty", ""),
        ("top_level_list", "- theft\n- burglary\n"),
        ("no_categories", "groups: {}\n"),
        ("categories_list", "categories: [theft, burglary]\n"),
        ("spec_is_text", "categories:\n  theft: just a string\n"),
        ("groups_is_list", "groups: [a]\ncategories:\n  theft: {zh: 盗窃, en: Theft}\n"),
        ("unknown_group", "categories:\n  theft: {zh: 盗窃, en: Theft, groups: [nope]}\n"),
        ("aliases_is_text", "categories:\n  theft: {zh: 盗窃, en: Theft, aliases: 偷窃}\n"),
        (
            "ambiguous_alias",
            "categories:\n  theft: {zh: 盗窃, en: Theft, aliases: [偷]}\n"
            "  burglary: {zh: 入室盗窃, en: Burglary, aliases: [偷]}\n",
        ),
    ],
)
def test_malformed_taxonomy_file(tmp_path, name, text):
    with pytest.raises(TaxonomyError) as excinfo:
        load_taxonomy(write(tmp_path, f"{name}.yaml", text))
    assert f"{name}.yaml" in str(excinfo.value)  # the message says which file


def test_gbk_encoded_file_is_a_taxonomy_error(tmp_path):
    path = write(tmp_path, "gbk.yaml", "categories:\n  theft: {zh: 盗窃, en: Theft}\n", "gbk")
    with pytest.raises(TaxonomyError, match="UTF-8"):
        load_taxonomy(path)


@pytest.mark.parametrize(
    "text", ["factors: {a: [\n", "factors: []\n", "other: {}\n", "factors:\n  a: text\n"]
)
def test_malformed_survey_factor_file(tmp_path, text):
    with pytest.raises(TaxonomyError):
        load_survey_factors(write(tmp_path, "factors.yaml", text))
