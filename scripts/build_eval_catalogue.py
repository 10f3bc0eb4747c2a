#!/usr/bin/env python3
"""Build Vitrine's evaluation catalogue from Debian's ``openclipart-png`` and ``openclipart-svg`` packages.

The demo catalogue (``demo/``, built by ``build_demo_catalogue.py``) has templated descriptions, which make text
search unrealistically easy.  This script builds a second catalogue for ``manage.py evaluate`` whose titles and
descriptions come from each drawing's own metadata, as its artist wrote it:

* the picture is the PNG rendering from ``openclipart-png`` (``<png>/<topic>/<name>.png``);
* the title and description come from the RDF/Dublin Core block (``dc:title``, ``dc:description``) inside the
  matching SVG from ``openclipart-svg`` (``<svg>/<topic>/<name>.svg``; the two packages use the same paths).

The selection is a hand-checked list (``CATEGORIES`` below), chosen by looking at the images, that shares no
source file and no output image with the demo catalogue.  Prices, stock and SKUs are made up but deterministic:
the same package versions always give byte-identical images and an identical manifest.

Usage::

    python scripts/build_eval_catalogue.py --png /usr/share/openclipart/png --svg /usr/share/openclipart/svg \\
        --out demo/eval

Only ``<out>/images/`` and ``<out>/manifest.csv`` are (re)written; other files in ``<out>`` (README.md,
queries.csv, negative_queries.csv) are left alone.
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import importlib.util
import re
import shutil
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

# --------------------------------------------------------------------------
# Image processing: build_demo_catalogue.py's (256 px, 4 % margin, sources
# under 64 px or over 60 megapixels skipped), with one threshold of our own.
# --------------------------------------------------------------------------
MAX_TRANSPARENT = 0.995  # skip sources with more transparent pixels than this (the demo uses 0.97)
MAX_SVG_BYTES = 8_000_000  # refuse to parse SVGs larger than this (the largest in the package is ~1.7 MB)
SIZE_BUDGET = 10_000_000  # bytes; the whole output folder must stay below this
MAX_DESCRIPTION = 300  # characters

# --------------------------------------------------------------------------
# Categories.  Each lists its source files relative to the package roots,
# without the suffix.  Every file was chosen after looking at it: one thing a
# shop could sell per picture; no people, logos, signs, maps or scenes; no
# black-and-white "_bw" copies; of near-identical drawings (same picture in
# another colour or with a small change) only one or two are kept.  Drawings
# whose metadata is not in English (many of the Italian "architetto" set) are
# left out, because the shop is an English one.  None of these files is used
# by the demo catalogue; build() checks that again by path and by checksum.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Category:
    slug: str
    name: str
    sku_prefix: str
    price_range: tuple[float, float]
    sources: tuple[str, ...]


CATEGORIES: list[Category] = [
    Category(
        slug="fruit-vegetables",
        name="Fruit & Vegetables",
        sku_prefix="FRU",
        price_range=(0.49, 6.99),
        sources=(
            "food/fruit/apple_bitten_dan_gerhard_01",
            "food/fruit/apple_wedge",
            "food/fruit/fruitcollection_leif_lod_07",
            "food/fruit/grapes_leif_lodahl_02",
            "food/fruit/lemon1",
            "food/fruit/lemon_half_slice_ganson",
            "food/fruit/lemon_wedge_ganson",
            "food/fruit/lime_half_slice_ganson",
            "food/fruit/lime_wedge_ganson",
            "food/fruit/orange_wedge",
            "food/fruit/pear_01",
            "food/fruit/rondelle_orange_01",
            "food/vegetables/cayennepepperrevisited_d_01",
            "food/pumpkin2_yemu_01",
            "food/pumpkin_erik_postma_01",
            "food/breads_and_carbs/potato_nicu_buculei_",
            "plants/mushroom_benji_park_",
        ),
    ),
    Category(
        slug="food-snacks",
        name="Food & Snacks",
        sku_prefix="FOO",
        price_range=(0.99, 19.99),
        sources=(
            "food/bowl_of_steaming_soup_01",
            "food/burrito_ganson",
            "food/french_fries_juliane_kr_r",
            "food/fries_ganson",
            "food/lasagna_ganson",
            "food/onion_rings",
            "food/perogies_ganson",
            "food/pizza_4_stagioni_archite_01",
            "food/pizza_cheese",
            "food/pizza_pepperoni",
            "food/pizza_rectangular__geral_01",
            "food/pizza_slice_fco._andrade_01",
            "food/sandwich_one_jean-victor_01",
            "food/soup_jarno_vasamaa_",
            "food/spaghetti_ganson",
            "food/submarine_sandwich_01",
            "food/marshmallow_on_a_stick_b_02",
            "food/crawfish1_ganson",
            "food/crawfish2_ganson",
            "food/meats_and_eggs/bacon_01",
            "food/meats_and_eggs/bacon_ganson",
            "food/meats_and_eggs/breakfast_sausage",
            "food/meats_and_eggs/burger_http_www.treebui_r",
            "food/meats_and_eggs/burger_linda_kim_01",
            "food/meats_and_eggs/chicken_burger",
            "food/meats_and_eggs/egg_muffin",
            "food/meats_and_eggs/farmer_onelette",
            "food/meats_and_eggs/fried_egg",
            "food/meats_and_eggs/fried_eggs",
            "food/meats_and_eggs/half_egg_jean-victor_bal_01",
            "food/meats_and_eggs/hamburger_ganson",
            "food/meats_and_eggs/hot_dog",
            "food/meats_and_eggs/hot_dog_juliane_krug_r",
            "food/meats_and_eggs/steak-v0.1",
            "food/meats_and_eggs/turkey_on_platter_01",
            "food/dairy/butter_01",
            "food/dairy/cheese_01",
            "food/breads_and_carbs/bread",
            "food/breads_and_carbs/garlic_toast",
            "food/breads_and_carbs/hash_browns",
            "food/breads_and_carbs/pancake",
            "food/breads_and_carbs/potato_chips",
            "food/honey",
            "food/beverages/ice_cube_jarno_vasamaa_",
            "food/beverages/ice_water_ganson",
        ),
    ),
    Category(
        slug="toys-games",
        name="Toys & Games",
        sku_prefix="TOY",
        price_range=(2.99, 79.99),
        sources=(
            "recreation/toys/abc_blocks_petri_lummema_01",
            "recreation/toys/domo_kun_nicu_buculei_02",
            "recreation/toys/gameboy_pocket_durex_r",
            "recreation/toys/kiddy_train_orlando_kara_",
            "recreation/toys/robot_ganson",
            "recreation/toys/rubber_duck1_ganson",
            "recreation/toys/rubik",
            "recreation/toys/rubik_s_cube_petri_lumme_01",
            "recreation/toys/rubik_s_cube_random_petr_01",
            "recreation/toys/simple_teddy_bear_gerald_01",
            "recreation/toys/stylized_teddy_bear_wit_01",
            "recreation/toys/teddybear_jarno_vasamaa_",
            "recreation/toys/toy_paper_plane_01",
            "recreation/toys/wagon_01",
            "containers/box_with_spring_nicu_buc_02",
            "tools/toys/unit_blocks_lion_kimbro_01",
            "recreation/games/dice",
            "recreation/games/two_red_dice_01",
            "recreation/games/9ball_form_jarno_vasama",
            "recreation/games/joystick_atari_style_da_r",
            "recreation/games/chess/black_and_white_kings_d_r",
            "recreation/games/chess/black_and_white_queens_r",
            "recreation/games/chess/chess_game_01",
            "recreation/games/chess/chesspieces-knight",
            "recreation/games/chess/chesspieces-rook",
            "computer/hardware/joystick_beige_gray_petr_01",
            "computer/hardware/joystick_black_red_petri_01",
            "computer/joypad_the_mad_processor_",
            "computer/games/xbox-controller_01",
            "computer/plush_tux_anita_01",
            "recreation/party/magic_hat_and_wand_nath_r",
            "transportation/vehicles/rocket",
        ),
    ),
    Category(
        slug="party-seasonal",
        name="Party & Seasonal",
        sku_prefix="PAR",
        price_range=(0.99, 49.99),
        sources=(
            "recreation/party/balloon-blue-aj",
            "recreation/party/balloons-aj",
            "recreation/party/balloons_01",
            "recreation/party/baloon1_04",
            "recreation/party/heart-ballons_benji_park_01",
            "recreation/party/hat_01",
            "recreation/holiday/gift01",
            "recreation/holiday/gift05",
            "recreation/holiday/valentines/heart_roberto_u._01",
            "recreation/holiday/christmas/christmas_tree_01",
            "recreation/holiday/christmas/evergreen_wreath_with_large_holly_01",
            "recreation/holiday/christmas/jingle_bells_01",
            "recreation/holiday/christmas/lightly_decorated_evergreen_01",
            "recreation/holiday/christmas/simple_evergreen_with_highlights_01",
            "recreation/holiday/christmas/tree",
            "recreation/holiday/christmas/wreath_of_evergreen_with_red_berries_01",
            "recreation/holiday/christmas/xmas",
            "plants/trees/christmas_balls_mo_01",
            "plants/trees/christmas_tree_mo_01",
            "people/clothing/hats/simple_crown_with_three_01",
            "people/clothing/hats/bejewelled_crown_with_t_01",
        ),
    ),
    Category(
        slug="home-kitchen",
        name="Home & Kitchen",
        sku_prefix="HOM",
        price_range=(2.99, 299.99),
        sources=(
            "food/bowl_chaspo_",
            "food/large_plate",
            "food/meats_and_eggs/frying_pan_padella_in_i_03",
            "tools/pan_frouke_01",
            "food/meatgrinder_benji_park_",
            "food/fondue_uliphant_01",
            "tools/weapons/knife",
            "office/cup_rollandin_francesco_",
            "food/beverages/alcohol/martini_glass_k_yager_01",
            "food/beverages/alcohol/wine_corks_ganson",
            "food/beverages/alcohol/wooden_barrel_petri_lumm_01",
            "food/sugarbox_01",
            "food/dairy/baby_bottle_01",
            "tools/bottle_jean_victor_balin_",
            "tools/blue_vacuum_cleaner_jaim_01",
            "tools/vacuum_cleaner_mariusz_k_01",
            "tools/vavuum_cleaner_-_uprigh_01",
            "tools/ironing_board_gerald_g._01",
            "tools/insecticide_nicu_buculei_02",
            "tools/toothbrush_and_paste_ganson",
            "tools/electric_lighter_joel_mo_01",
            "tools/orange_burner_01",
            "office/lotion_linda_kim_01",
            "containers/cardboard_box_jarno_vasa_",
            "containers/paperbag1_juliane_krug",
            "containers/box_juliane_krug_s",
            "containers/open_box_juliane_krug_r",
            "containers/paperbag2_juliane_krug",
            "containers/recycling_box_a.j._ashto_01",
            "people/safety_pin_timothy_whit_r",
            "signs_and_symbols/clocks/alarm_clock_gerald_g._01",
            "signs_and_symbols/clocks/alarm_clock_mike_powers_",
            "signs_and_symbols/clocks/analog_clock_jonathan_di_01",
            "signs_and_symbols/clocks/clock03",
            "signs_and_symbols/clocks/clock_michael_breuer_01",
            "signs_and_symbols/clocks/modern_clock_chris_kemps_01",
            "signs_and_symbols/clocks/sandglass_vermin_",
            "buildings/furniture/small_square_table_01",
            "buildings/furniture/soft_blue_couch_jonadab_01",
            "buildings/furniture/wooden_table_benji_park_01",
            "office/picture_frame_jakob_chao_",
            "recreation/knitting_01",
            "tools/metal_cage_kurt_nordstro_",
        ),
    ),
    Category(
        slug="computers-networking",
        name="Computers & Networking",
        sku_prefix="COM",
        price_range=(4.99, 1499.99),
        sources=(
            "computer/dimm_memory_magnus_erik_",
            "computer/memory_ddr_magnus_erik_l_",
            "computer/cpu_heatsink_fan_socket_",
            "computer/24_ports_switch_nicolas__01",
            "computer/8port_switch_denco",
            "computer/hub_ruairi_hann_r",
            "computer/router_cisco_nicola_",
            "computer/switch_hp_nicolas_c_",
            "computer/access_point_nicolas_cle_",
            "computer/alcatel_oxo_nicolas_cle_",
            "computer/server_mimooh_",
            "computer/server_mimooh_01",
            "computer/switch_cisco_nico_",
            "computer/switch_cisco_nicola2",
            "computer/alcatel_nicolas_cle_",
            "computer/thin_client_risto_pekkal_01",
            "computer/smartcard_alberto_piccin_01",
            "computer/sim_borja_bravo_01",
            "computer/keyboard_key_yemu",
            "computer/mouse_the_structorr_",
            "computer/floppy_architetto_france_01",
            "computer/floppy",
            "computer/notebook1_sergio_luiz_ar_02",
            "computer/etiquette_cd-rom_01",
            "computer/network/wireless_transmitter_bra_01",
            "computer/hardware/printer_anton_yu_01",
            "computer/hardware/racked",
        ),
    ),
    Category(
        slug="phones-audio-video",
        name="Phones, Audio & Video",
        sku_prefix="AUD",
        price_range=(4.99, 899.99),
        sources=(
            "recreation/music/boombox_linda_kim_01",
            "recreation/music/fifties_jukebox_gerald_g_01",
            "recreation/music/headphones_davide_pesent_",
            "recreation/music/CD_Player/rca_stereo_cd_player_jo_r",
            "recreation/music/45_rpm_record_gerald_g._01",
            "recreation/music/45_rpm_records_gerald_g._01",
            "recreation/music/vinyl_disc_philippe_coli_01",
            "recreation/music/gramophone",
            "recreation/tv_01",
            "buildings/furniture/television_peterm_",
            "electronics/camera_michael_tunniclif_01",
            "electronics/camera_icon_stuart_moore_01",
            "electronics/satellite_dish_ali_hussn_01",
            "electronics/video_cassette_vhs_mo_",
            "electronics/compact_disc",
            "electronics/cd",
            "computer/stylized_cd_jakob_chaosi_",
            "office/telephone/cellular_phone_shandy_br_",
            "office/telephone/red_telephone_mimooh_01",
            "office/telephone/sprint_cell_phone_joel_r",
            "office/telephone/telephone_receiver_01",
            "office/telephone/phone_handset_gray_einar_01",
            "office/telephone/phone",
            "office/phone_sergio_luiz_araujo_01",
            "office/handphone_2_toh_yen_chen_01",
            "computer/pda_2_toh_yen_cheng_01",
            "computer/pda_toh_yen_cheng_01",
            "computer/cleanpalm_teudimundo_01",
        ),
    ),
    Category(
        slug="books-stationery",
        name="Books & Stationery",
        sku_prefix="BOO",
        price_range=(0.99, 49.99),
        sources=(
            "education/books/book_01",
            "education/books/book_02",
            "education/books/books-aj.svg_aj_ashton_01",
            "education/books/closed_bible_01_01",
            "education/books/closed_book_01",
            "education/books/diary_costea_bogdan_01",
            "education/books/old_book_lumen_design_st_01",
            "education/books/open_bible_01_01",
            "education/books/open_book_01",
            "education/books/open_book_nae_02",
            "education/books/paperback_book_black_gal_",
            "education/books/stack_of_books_01",
            "education/books/stara_ksiega_-_old_book_01",
            "education/books/newspaper_aubanel_monnie_01",
            "education/newspaper_nicu_buculei_01",
            "education/blue_folder_seth_yastrov_01",
            "education/palette_juliane_krug_01",
            "education/pencil_01",
            "education/brush",
            "education/paint",
            "education/note",
            "education/paper_01",
            "office/addressed_envelope_with_stamp_01",
            "office/postage_stamp_jarno_vasa_",
            "office/glossy_paper__gino_river_01",
            "office/parchment_paper_landsca_",
            "office/parchment_paper_portrai_",
            "office/folder2",
            "office/mail1",
            "office/note_with_pin_nicu_bucul_02",
            "office/certificate_01",
            "office/papers_francesco_rolland_",
            "office/megaphone_nicu_buculei_01",
        ),
    ),
    Category(
        slug="plants-flowers",
        name="Plants & Flowers",
        sku_prefix="PLA",
        price_range=(2.99, 59.99),
        sources=(
            "plants/flowers/bouquet_of_flowers_01",
            "plants/cacuts_01",
            "plants/flowers/daffodil_jonathan_dietri_01",
            "plants/flowers/daffodil_susan_park_01",
            "plants/flowers/daisy_jonathan_dietrich_01",
            "plants/flowers/dream_flower_janet_theob_01",
            "plants/flowers/flower1_juliane_krug_01",
            "plants/flowers/flower2_juliane_krug_01",
            "plants/flowers/flower_01",
            "plants/flowers/flower_02",
            "plants/flowers/flower_03",
            "plants/flowers/flower_peterm_01",
            "plants/flowers/flowerandpot_daniel_ste_r",
            "plants/flowers/flowers_jonathan_dietric_01",
            "plants/flowers/full_bloom_linda_kim_01",
            "plants/flowers/funnyflower_02",
            "plants/flowers/geranium_ganson",
            "plants/flowers/lotas_yogesh_kanitkar_01",
            "plants/flowers/magnolia_white_patricia__01",
            "plants/flowers/pink-rose_tess_brady_01",
            "plants/flowers/red_flower_01",
            "plants/flowers/red_flower_raphael_seban_01",
            "plants/flowers/sakura_dave_pena_01",
            "plants/flowers/sun_flower_ganson",
            "plants/flowers/tulips_ganson",
            "plants/sakura_01",
            "plants/bamboo_danny_allen_r",
            "plants/trees/fern_mo_01",
            "unsorted/rose",
        ),
    ),
    Category(
        slug="tools-hardware",
        name="Tools & Hardware",
        sku_prefix="TOO",
        price_range=(0.99, 199.99),
        sources=(
            "tools/cog_01",
            "tools/key_jordan_wiens_01",
            "tools/magnifing_glass_gino_riv_01",
            "tools/magnifying_glass_olivier_01",
            "tools/magnificator",
            "office/magnifying_glass_teudimu_01",
            "office/lens_lente_francesco_ro_r",
            "tools/paint_brush_linda_kim_01",
            "tools/paint_roller_wall_gerald_01",
            "tools/paint_roller_border_gera_01",
            "tools/scalpel_jon_campbell_01",
            "tools/thermometer_www.jonasste_01",
            "tools/simple_shovel_jeff_simps_01",
            "plants/trees/bowsaw_benji_park_01",
            "plants/trees/bypasspruner_benji_park_01",
            "buildings/brick_frouke_01",
            "containers/ammo_can_ganson",
            "geography/spyglass_vladimir_hernan_01",
            "electronics/bulb/bulb",
            "electronics/bulb/lightbulb_brightlit_benj_",
            "electronics/bulb/lightbulb_jon_phillips_01",
            "electronics/bulb/lightbulb_jon_phillips_02",
            "electronics/bulb/lightbulb_lit_benji_park_",
            "office/lamp_sergio_luiz_araujo__01",
            "electronics/battery/battery_01",
            "electronics/battery/battery_jean-victor_bali_01",
            "electronics/battery/battery_snuatautisticido_01",
            "electronics/resistors_ganson",
            "electronics/capacitors_1",
            "electronics/transistor",
            "electronics/diodes2",
        ),
    ),
]

# --------------------------------------------------------------------------
# Titles and descriptions.  The title is the drawing's dc:title, cleaned up
# only mechanically (underscores, CamelCase, counters, ".svg", the "-aj"
# author tag); capitalisation and spelling are the artist's.  Some packages
# give a whole set of drawings one placeholder or collection title (Nicu
# Buculei's "Clipart by Nicu Buculei - <another drawing>", "Etiquette Icons",
# "R16 sibmission"); those, and empty titles, are replaced by the file name,
# cleaned the same way.
# --------------------------------------------------------------------------

PLACEHOLDER_TITLES = re.compile(
    r"^(clipart by .*|r1\d (sibmission|submission|general)|various cliparts|etiquette icons|lemon svg theme"
    r"|part of the flat icon collection.*|pc connectors|sallite)$",
    re.IGNORECASE,
)

# Author tags that some artists appended to titles and file names ("balloons-aj", "books-aj.svg").
AUTHOR_SUFFIX = re.compile(r"[-_ ]aj$", re.IGNORECASE)

# Sentences of a description that carry no information about the product: contact details,
# tool credits, licence notes and upload boilerplate.
BOILERPLATE = re.compile(
    r"@|https?://|www\.|hash\(0x|inkscape|sodipodi|public domain|creative commons|originally uploaded"
    r"|created by|drawn by|made with|email|\bsvg\b|openclipart|clip ?art",
    re.IGNORECASE,
)

# Descriptions of selected drawings that are not in English (the shop is English), left empty.
NON_ENGLISH_DESCRIPTIONS = {
    "office/phone_sergio_luiz_araujo_01",  # "um telefone legal"
}

XML_LOCAL = re.compile(r"^\{[^}]*\}")


def local_name(tag: str) -> str:
    return XML_LOCAL.sub("", tag)


def read_svg_metadata(path: Path) -> tuple[str, str]:
    """(dc:title, dc:description) of the drawing's cc:Work, or empty strings.

    The files are trusted Debian package content, but refuse oversized files and entity
    declarations anyway, so a broken or hostile file cannot blow up the parser.
    """
    if not path.is_file() or path.stat().st_size > MAX_SVG_BYTES:
        return "", ""
    data = path.read_bytes()
    if b"<!ENTITY" in data:
        return "", ""
    try:
        root = ET.fromstring(data)
    except ET.ParseError:
        return "", ""
    work = next((el for el in root.iter() if local_name(el.tag) == "Work"), None)
    if work is None:
        return "", ""
    found = {"title": "", "description": ""}
    for child in work:
        name = local_name(child.tag)
        if name in found and not found[name]:
            found[name] = " ".join("".join(child.itertext()).split())
    return found["title"], found["description"]


def clean_title(text: str) -> str:
    """Mechanical clean-up of a title or file name; never changes wording or case."""
    text = re.sub(r"\.svg$", "", text.strip(), flags=re.IGNORECASE)
    text = re.sub(r"-v\d+(\.\d+)*$", "", text)  # "steak-v0.1"
    text = AUTHOR_SUFFIX.sub("", text)
    text = text.replace("_", " ")
    # Split CamelCase words ("CayennePepperRevisited", "FlowerAndPot") but not "eBuild" or "DDR".
    text = " ".join(re.sub(r"(?<=[a-z])(?=[A-Z][a-z])", " ", w) if w[:1].isupper() else w for w in text.split())
    words = text.split()
    # Trailing counters: "gift 01", "handphone 2", "baloon1", "cake1" (model numbers like "2600" stay).
    while len(words) > 1 and re.fullmatch(r"\d{1,2}", words[-1]):
        words.pop()
    if words and re.fullmatch(r"[A-Za-z]{3,}\d{1,2}", words[-1]):
        words[-1] = words[-1].rstrip("0123456789")
    return " ".join(words)


def make_title(svg_title: str, source: str) -> str:
    title = clean_title(svg_title)
    if not title or PLACEHOLDER_TITLES.match(svg_title.strip()):
        title = clean_title(source.rsplit("/", 1)[-1])
    return title


def normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower())


def make_description(svg_description: str, title: str, source: str) -> str:
    """The artist's own description without boilerplate, or "" when nothing meaningful is left."""
    if source in NON_ENGLISH_DESCRIPTIONS:
        return ""
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(svg_description.split()))
    kept = [s for s in sentences if s and not BOILERPLATE.search(s)]
    text = ""
    for sentence in kept:
        candidate = f"{text} {sentence}".strip()
        if len(candidate) > MAX_DESCRIPTION:
            break
        text = candidate
    if not text and kept:  # one over-long sentence: cut it at a word boundary
        text = kept[0][: MAX_DESCRIPTION - 1].rsplit(" ", 1)[0] + "…"
    # A description that only repeats the title (or the bare file name) says nothing more.
    if normalise(text) in {normalise(title), normalise(source.rsplit("/", 1)[-1])}:
        return ""
    return text


# --------------------------------------------------------------------------
# What this catalogue shares with build_demo_catalogue.py: colour names, image
# processing, prices and stock (under their own seed namespace), slugs; and
# the demo's source list, so that nothing it uses is used again here.
# --------------------------------------------------------------------------
SEED_NAMESPACE = "eval"  # prices and stock seeded apart from the demo's


@functools.cache
def demo_builder() -> ModuleType:
    """``build_demo_catalogue.py``, beside this script, loaded as a module."""
    script = Path(__file__).with_name("build_demo_catalogue.py")
    spec = importlib.util.spec_from_file_location("build_demo_catalogue", script)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {script}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def make_price(key: str, lo: float, hi: float) -> str:
    """Deterministic shop-style price within [lo, hi] (log-uniform), seeded apart from the demo's."""
    return str(demo_builder().make_price(key, lo, hi, SEED_NAMESPACE))


def make_stock(key: str) -> str:
    """Deterministic stock level; about one product in eight is sold out."""
    return str(demo_builder().make_stock(key, SEED_NAMESPACE))


def slugify(text: str) -> str:
    return str(demo_builder().slugify(text)) or "product"


def process_image(path: Path) -> tuple[bytes, str]:
    """The demo's processing (crop to content, transparent margin, Lanczos down to 256 px, colour name), with
    this catalogue's emptiness threshold; returns (png_bytes, colour_name) or raises the demo's ``Skip``."""
    data, colour = demo_builder().process_image(path, max_transparent=MAX_TRANSPARENT)
    return data, str(colour)


def demo_sources() -> set[str]:
    """Source files (relative, without suffix) listed by build_demo_catalogue.py."""
    module = demo_builder()
    return {f"{folder}/{stem}" for cat in module.CATEGORIES for folder, stems in cat.sources.items() for stem in stems}


def file_checksums(paths: list[Path]) -> set[str]:
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.is_file()}


# --------------------------------------------------------------------------
# Main build
# --------------------------------------------------------------------------


@dataclass
class Product:
    category: Category
    source: str
    data: bytes
    color: str
    title: str
    description: str
    image: str = ""
    sku: str = ""


def build(png_root: Path, svg_root: Path, out: Path, demo: Path) -> list[Product]:
    used_by_demo = demo_sources()
    demo_source_sums = file_checksums([png_root / f"{s}.png" for s in sorted(used_by_demo)])
    demo_output_sums = file_checksums(sorted((demo / "images").rglob("*.png")))
    if not used_by_demo or not demo_output_sums:
        print("warning: could not read the demo catalogue's sources or images; overlap not checked", file=sys.stderr)

    products: list[Product] = []
    seen_source: dict[str, str] = {}
    seen_output: dict[str, str] = {}
    for cat in CATEGORIES:
        kept = 0
        for source in cat.sources:
            path = png_root / f"{source}.png"
            if source in used_by_demo:
                print(f"  skip {source}: used by the demo catalogue", file=sys.stderr)
                continue
            if not path.is_file():
                print(f"  skip {source}: missing", file=sys.stderr)
                continue
            src_sum = hashlib.sha256(path.read_bytes()).hexdigest()
            if src_sum in demo_source_sums:
                print(f"  skip {source}: same file as one the demo catalogue uses", file=sys.stderr)
                continue
            if src_sum in seen_source:
                print(f"  skip {source}: same file as {seen_source[src_sum]}", file=sys.stderr)
                continue
            seen_source[src_sum] = source
            try:
                data, color = process_image(path)
            except demo_builder().Skip as why:
                print(f"  skip {source}: {why}", file=sys.stderr)
                continue
            checksum = hashlib.sha256(data).hexdigest()
            if checksum in demo_output_sums:
                print(f"  skip {source}: same output as a demo catalogue image", file=sys.stderr)
                continue
            if checksum in seen_output:
                print(f"  skip {source}: same output as {seen_output[checksum]}", file=sys.stderr)
                continue
            seen_output[checksum] = source
            svg_title, svg_description = read_svg_metadata(svg_root / f"{source}.svg")
            title = make_title(svg_title, source)
            description = make_description(svg_description, title, source)
            products.append(Product(cat, source, data, color, title, description))
            kept += 1
        print(f"{cat.name}: {kept} images")

    images_dir = out / "images"
    if images_dir.exists():
        shutil.rmtree(images_dir)
    counters: dict[str, int] = {}
    taken: set[Path] = set()
    for p in products:
        counters[p.category.slug] = counters.get(p.category.slug, 0) + 1
        p.sku = f"EVAL-{p.category.sku_prefix}-{counters[p.category.slug]:04d}"
        stem = slugify(p.title)
        target = images_dir / p.category.slug / f"{stem}.png"
        n = 2
        while target in taken:  # titles need not be unique; file names must be
            target = images_dir / p.category.slug / f"{stem}-{n}.png"
            n += 1
        taken.add(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(p.data)
        p.image = target.relative_to(out).as_posix()

    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["image", "title", "category", "description", "price", "sku", "color", "stock"])
        for p in products:
            writer.writerow(
                [
                    p.image,
                    p.title,
                    p.category.name,
                    p.description,
                    make_price(p.source, *p.category.price_range),
                    p.sku,
                    p.color,
                    make_stock(p.source),
                ]
            )
    return products


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--png",
        type=Path,
        default=Path("/usr/share/openclipart/png"),
        help="root of the openclipart-png tree (default: %(default)s)",
    )
    parser.add_argument(
        "--svg",
        type=Path,
        default=Path("/usr/share/openclipart/svg"),
        help="root of the openclipart-svg tree (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("demo/eval"),
        help="output folder for images/ and manifest.csv (default: %(default)s)",
    )
    parser.add_argument(
        "--demo",
        type=Path,
        default=Path("demo"),
        help="the demo catalogue, whose images must not be reused (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    for folder in (args.png, args.svg):
        if not folder.is_dir():
            parser.error(f"source folder not found: {folder}")
    args.out.mkdir(parents=True, exist_ok=True)
    products = build(args.png, args.svg, args.out, args.demo)
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    empty = sum(1 for p in products if not p.description)
    print(
        f"wrote {len(products)} products ({empty} without a description); "
        f"{args.out} now holds {size:,} bytes; manifest at {args.out / 'manifest.csv'}"
    )
    if size > SIZE_BUDGET:
        print(f"error: {args.out} exceeds the {SIZE_BUDGET:,} byte budget", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
