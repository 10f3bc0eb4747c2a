#!/usr/bin/env python3
"""Build the Vitrine demo catalogue from Debian's ``openclipart-png`` package.

The Open Clip Art Library PNGs (public domain) live under
``/usr/share/openclipart/png/<topic>/<subtopic>/*.png``.  This script picks a
hand-curated, category-coherent set of product-like images from it, converts
them to small optimised PNGs and writes a ``manifest.csv`` that the shop's
importer understands.

Everything is deterministic: the same source tree always yields byte-identical
images and an identical manifest (prices and description variants are seeded
from the source file name, never from a random generator's global state).

Usage::

    python scripts/build_demo_catalogue.py --source /usr/share/openclipart/png --out demo

Only ``<out>/images/`` and ``<out>/manifest.csv`` are (re)written; other files
in ``<out>`` (such as README.md) are left alone.
"""

from __future__ import annotations

import argparse
import colorsys
import csv
import hashlib
import io
import re
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageChops

# --------------------------------------------------------------------------
# Image processing parameters
# --------------------------------------------------------------------------
MAX_SIDE = 256  # longest side of an output image (never upscaled)
MIN_SOURCE_SIDE = 64  # skip sources smaller than this on either side
MAX_TRANSPARENT = 0.97  # skip sources with more transparent pixels than this
ALPHA_VISIBLE = 16  # alpha above which a pixel counts as content
PADDING = 0.04  # transparent margin kept around the cropped content
MAX_SOURCE_PIXELS = 60_000_000  # refuse absurdly large sources (some are 10k x 16k)
SIZE_BUDGET = 18_000_000  # bytes; the whole demo/ folder must stay below this

# --------------------------------------------------------------------------
# Categories.  Each one lists source files (relative to --source, without the
# ".png" suffix) grouped by folder.  The lists were chosen by looking at the
# images: only things a shop could sell, one kind of thing per category, no
# black-and-white duplicates ("*_bw"), no people, logos, signs or scenes.
# --------------------------------------------------------------------------


@dataclass
class Category:
    slug: str
    name: str
    sku_prefix: str
    price_range: tuple[float, float]
    descriptions: list[str]
    sources: dict[str, list[str]] = field(default_factory=dict)


CATEGORIES: list[Category] = [
    Category(
        slug="fruit-vegetables",
        name="Fruit & Vegetables",
        sku_prefix="FRU",
        price_range=(0.49, 6.99),
        descriptions=[
            "{title}, hand-picked at peak ripeness and delivered fresh.",
            "Fresh {title} from local growers, perfect for snacking or cooking.",
            "Crisp, flavourful {title}, sold individually from our produce counter.",
            "Seasonal {title}, washed and ready for your kitchen.",
        ],
        sources={
            "food/fruit": [
                "an_apple_01",
                "another_apple_01",
                "apple",
                "apple_martin_schmidt-li_01r",
                "applf",
                "cartoon_apple_k_yager_01",
                "banana",
                "bananas_nicu_buculei_01",
                "cherries",
                "cherry_jean_victor_balin_",
                "cherry_jonathan_dietrich_01",
                "grape_01",
                "grapes_01",
                "grapes_simple",
                "green_pear_01",
                "pear",
                "pear_02",
                "pear_simple",
                "pera_architetto_francesc_01",
                "la_prugna_architetto_fra_01",
                "prune",
                "peach_simple",
                "pesca_architetto_frances_01",
                "lemon",
                "lemon_simple",
                "lemon_whole_ganson",
                "lemon_half_ganson",
                "lemon_slice_ganson",
                "lime_whole_ganson",
                "lime_half_ganson",
                "lime_slice_ganson",
                "orange",
                "orange_dave_pena_01",
                "orange_simple",
                "orange_slice_jonathan_di_01",
                "rondelle_d_orange_01",
                "melon_goneri_le_bouder_01",
                "pasteque_01",
                "watermelon_james_kilfige_01",
                "watermelon_simple",
                "pineapple",
                "strawberry",
                "strawberry_01",
                "strawberry_jonathan_diet_01",
                "strawberry_simple",
                "champignon_01",
            ],
            "food/vegetables": [
                "aglio_architetto_frances_01",
                "cayenne_pepper_1_simple_01",
                "corn_cob",
                "pannocchia_di_gran_turc_01",
                "habanero_pepper_1_simpl_01",
                "onion_joerg_rosenbauer_01",
                "peperoncino_pepper_fra_",
                "ravanello_architetto_fra_01",
                "what_s_up_doc_01",
            ],
            "food": ["pomodori_architetto_fran_01", "zucca_architetto_frances_01"],
        },
    ),
    Category(
        slug="bakery-sweets",
        name="Bakery & Sweets",
        sku_prefix="SWE",
        price_range=(0.99, 24.99),
        descriptions=[
            "{title}, freshly made every morning in our bakery.",
            "A sweet treat: {title}, made with real butter and sugar.",
            "Indulge in our {title}, a customer favourite for any occasion.",
            "{title} from the dessert counter, best enjoyed the same day.",
        ],
        sources={
            "food/desserts": [
                "birthday_cake",
                "cake1_jarno_vasamaa_01",
                "cake_etienne_bersac_r",
                "flat_cake_jean-victor_ba_01",
                "gateau_jean_victor_balin_",
                "pink_cake_gabrielle_now_r",
                "torta_architetto_frances_01",
                "muffin_jean_victor_balin_",
                "pie_apple",
                "pie_cherry",
                "pie_pumpkin",
                "flan_jean-victor_balin_01",
                "pudim_valessio_soares_de_",
                "gauffre_au_chocolat_01",
                "candy_01",
                "candy_02",
                "candy_10",
                "candy_20",
                "candy_21",
                "candy_22",
                "candy_30",
                "candy_31",
                "lollipop_dave_pena_01",
                "cone1_ganson",
                "cone2_ganson",
                "cone3_ganson",
                "cone4_ganson",
                "cone_alt1",
                "cone_alt_2",
                "cone_alt3",
                "cone_alt4",
                "cone_soft_chocolate",
                "cone_soft_vanilla",
                "gelato_all_39_italiana_a_01",
                "ice_cream_cone_linda_kim_01",
                "glace_italienne_jean-vic_01",
                "glace_01_jean-victor_bal_01",
                "glace_2_jean-victor_bali_01",
                "glace_03_jean-victor_bal_01",
                "glace_4_jean-victor_bali_01",
                "glace_05_jean-victor_bal_01",
                "glace_06_jean-victor_bal_01",
                "glace_7_jean-victor_bali_01",
            ],
            "food/breads_and_carbs": [
                "bread_01",
                "croissant_01",
                "croissant_gerald_g._01",
                "muffin1",
                "muffin2",
                "muffin_3",
                "pancakes_ganson",
                "pancakes_berries",
                "pretzel_01",
            ],
            "food/fruit": ["candied_apples_ganson"],
        },
    ),
    Category(
        slug="beverages",
        name="Beverages",
        sku_prefix="BEV",
        price_range=(0.99, 29.99),
        descriptions=[
            "{title}, served chilled or hot as it should be.",
            "Refreshing {title} for breakfast, lunch or a quiet evening.",
            "Our {title} is a pantry staple, ready to pour.",
            "{title}: a classic drink, enjoyed by the whole family.",
        ],
        sources={
            "food/beverages": [
                "apple_juice_box",
                "orange_juice_box",
                "bottled_drink",
                "pop_can",
                "soft_drink",
                "softdrink_icon_01",
                "lattine_di_birra_archite_01",
                "milk_carton_jarno_vasama_",
                "milk_ganson",
                "lemonade",
                "lemonade_linda_kim_01",
                "drinking_glass_with_red_punch_01",
                "glass",
                "glass_01",
                "coffee",
                "coffee_ganson",
                "coffe_tea_01",
                "cuppa_schwoo_01",
                "tazza_di_caffe_architett_01",
                "teacup_ganson",
                "kubek_herbaty_-_mug_of__01",
                "zielony_kubek_herbaty_-_01",
                "mug",
                "mug_toh_yen_cheng_01",
                "a_teapot_01",
                "teapot_ganson",
                "teiera_tazza_architetto__01",
            ],
            "food/beverages/alcohol": [
                "beer",
                "beer1",
                "bottiglia_di_vino_pregi_01",
                "ontologia_del_vino_archi_01",
                "wine",
                "wine_glass_christian_h._",
                "cocktail_daniel_steele_r",
            ],
            "food/fruit": ["juice_glass_andremarcel._01"],
        },
    ),
    Category(
        slug="clothing-accessories",
        name="Clothing & Accessories",
        sku_prefix="CLO",
        price_range=(7.99, 149.99),
        descriptions=[
            "{title}, cut from quality materials for everyday comfort.",
            "Complete your look with this {title}.",
            "Timeless {title} that pairs well with any outfit.",
            "{title} in a versatile style, made to last season after season.",
        ],
        sources={
            "people/clothing": [
                "camicia_in_seta_architet_01",
                "t-shirt_01",
                "t-shirt_02",
                "t-shirt_03",
                "wild_summer_shorts_natha_01",
                "tie_-_clothing_nicu_bucu_01",
                "mitten_nathan_eady_01",
                "winter_hat_nathan_eady_01",
                "adventurer_hat_nicu_bucu_01",
                "tophat_benji_park_01",
                "hiking_boot_jarno_vasama_",
                "tennis_shoe_jarno_vasama_",
                "tennis_shoes_jarno_vasam_",
                "thongs_01",
                "sunglasses_01",
                "sunglasses_linda_kim_01",
                "earring_frouke_01",
                "gold_chain_curved_as_a__01",
                "gold_chain_of_round_lin_01",
            ],
            "people/clothing/hats": [
                "aussie_hat_01",
                "baseball_cap_ganson",
                "blue_fedora",
                "green_fedora_01",
                "red_fedora",
                "purple_hat_nicu_buculei_01",
                "slouch_hat_01",
                "sombrero_dave_pena_01",
                "propeller",
                "hat_-_clothing_nicu_bucu_01",
                "hat_-_clothing_nicu_bucu_02",
                "hat_-_clothing_nicu_bucu_03",
                "hat_-_clothing_nicu_bucu_04",
                "hat_-_clothing_nicu_bucu_05",
            ],
            "people/clothing/jewelry": ["wedding_rings_jarno_vas_"],
            "people/clothing/pantyhose": ["pantyhose_collant_rolla_", "pantyhose_rollandin_fra1"],
            "unsorted": [
                "Attaccapanni_con_vestito_da_donna",
                "vestito_rosa",
                "calzettoni",
                "borsetta",
            ],
            "containers": ["borsa_estiva_architetto__01", "valigie_bags_architetto__01"],
            "transportation": ["little_tan_suitcase_jona_"],
            "tools": ["umbrella"],
        },
    ),
    Category(
        slug="computers-electronics",
        name="Computers & Electronics",
        sku_prefix="ELE",
        price_range=(9.99, 899.99),
        descriptions=[
            "{title} with reliable performance for home and office.",
            "Upgrade your setup with this {title}.",
            "{title}: easy to set up, built for years of daily use.",
            "A dependable {title}, backed by a two-year warranty.",
        ],
        sources={
            "computer/hardware": [
                "computer",
                "computer1",
                "computer2",
                "computer-aj_aj_ashton_01",
                "desktop",
                "tower",
                "gnome-fs-client",
                "workstation_hash_0x89c79_01",
                "laptop",
                "laptop_01",
                "monitor",
                "lcd",
                "flat_screen_gino_rivera_01",
                "lcd_monitor_shandy_brown_",
                "lcd_monitor_the_structor_",
                "doublesight_dual_monito_01",
                "schermo_macintosh_archit_01",
                "video1_sergio_luiz_arauj_01",
                "video_lcd_sergio_luiz_ar_01",
                "keyboard",
                "keyboard_01",
                "computer_keyboard_01",
                "mouse",
                "mouse2",
                "mouse_scroll_fco._andrad_01",
                "printer",
                "printer_nicu_buculei_01",
                "laserprinter",
                "etiquette_printer_01",
                "stampante_architetto_fra_01",
                "etiquette_scanner_01",
                "modem",
                "hub",
                "gnome-dev-harddisk",
                "unita_disco_rigido_archi_01",
                "usb_memory_stick_01",
                "digital-camera_aj_ashton_01",
                "digital_camera_nicu_bucu_01",
                "handheld_gps_gerald_g._01",
            ],
            "computer": [
                "crt_monitor_01",
                "etiquette_laptop_01",
                "green_computer_merzok_01",
                "pale_server_teudimundo_01",
                "server_olivier_boyer_01",
                "pc_speaker_joel_montes_d_01",
                "webcam_mazdac_01",
                "slim_cd_drive_frederic_m_01",
                "floppy_disk_architetto_f_01",
                "nikon_coolpix_auban_",
            ],
            "office/telephone": [
                "mobile",
                "mobile_phone_01",
                "slim_cell_phone_israel_c_01",
                "handphone_toh_yen_cheng_01",
                "ip_phone_michael_hart_r",
            ],
            "electronics": ["camcorder_jaime_sanchez1", "sony_clie_william_page_"],
        },
    ),
    Category(
        slug="tools-hardware",
        name="Tools & Hardware",
        sku_prefix="TOO",
        price_range=(3.99, 199.99),
        descriptions=[
            "{title} built for DIY projects and professional jobs alike.",
            "Heavy-duty {title} with a comfortable, secure grip.",
            "Every toolbox needs a {title}.",
            "{title} made from hardened materials for a long working life.",
        ],
        sources={
            "tools": [
                "hammer_nicu_buculei_01",
                "hammer_peterm1",
                "construction_hammer_jon__01",
                "blacksmith_hammer_ganson",
                "wooden_mallot_benji_park_",
                "nail_puller_peterm_",
                "axe_peterm_",
                "saw_peterm_",
                "utensile_sega_architetto_01",
                "drill_peterm_",
                "screwdriver_peterm_",
                "wrench_jarno_vasamaa_01",
                "tool",
                "tools_nicu_buculei_01",
                "utensili_chiave_e_cacci_01",
                "viti_architetto_francesc_01",
                "livella_architetto_franc_01",
                "blacksmith_anvil_ganson",
                "paint_brush_costea_bogda_01",
                "paint_roller_gerald_g._01",
                "brush_roller_costea_bogd_01",
                "spaclu_costea_bogdan_01",
                "trowel_benji_park_01",
                "roundpointshovel_benji_p_01",
                "leafrake_benji_park_01",
                "cultivator_benji_park_01",
                "bypasslopper_benji_park_01",
                "hedgeshear_benji_park_01",
                "broom_nicu_buculei_01",
                "scrub_brush_michael_moor_",
                "secchio_e_spugna_archite_01",
                "padlock_aj_ashton_01",
                "lock",
                "lock_-_open_afief_halumi_01",
                "keyring_as_",
            ],
            "unsorted": [
                "motosega",
                "sega_per_legno",
                "metro_avvolgibile",
                "carretta_da_cantiere",
                "scala_doppia",
                "lampada_da_cantiere",
                "pinzatrice_grigia",
                "guanti__e_pinze",
            ],
        },
    ),
    Category(
        slug="sports-outdoors",
        name="Sports & Outdoors",
        sku_prefix="SPO",
        price_range=(4.99, 249.99),
        descriptions=[
            "{title} for training, matches and weekend fun.",
            "Get out and play with this {title}.",
            "Competition-grade {title}, trusted by clubs and coaches.",
            "{title}: durable, lightweight and ready for action.",
        ],
        sources={
            "recreation/sports": [
                "soccer_ball_ganson",
                "soccer_ballon_tanguy_jac_",
                "football_ball_brice_boye_01",
                "volley-ball_andrea_bianc_01",
                "volley_ball_angelo_gelmi_01",
                "baseball_anthony_liekens_01",
                "basebalm_ganson",
                "baseball_bat_ganson",
                "baseball_glove_ganson",
                "cricket_bat_01",
                "tennis_racket_01",
                "table_tennis_racquets_o_01r",
                "8_ball_jarno_vasamaa",
                "9_ball_jarno_vasamaa",
                "8ball_nicu_buculei_01",
                "8ball_form_jarno_vasama",
                "blowling_ball_01",
                "dartboard_ruud_steltenpo_01",
                "target_with_arrow_virgin_01",
                "football_helmet_gerald_g_01",
                "volleball_net_angelo_gel_01",
                "cronometro_mauro_olivo_01",
                "binoculars_vladimir_hern_01",
            ],
            "recreation": ["rollerblades", "sledge_01"],
            "tools": [
                "bussola_architetto_franc_01",
                "bussola_mauro_olivo_01",
                "hurricane_lamp_ganson",
                "telescope_01",
            ],
            "recreation/toys": [
                "ball",
                "beach_ball_01",
                "beachball_v0.1",
                "surfboard_davek_01",
                "boomerang_01",
            ],
            "people/clothing": ["pattino_architetto_franc_01"],
            "unsorted": [
                "tenda_da_campeggio_archi_01",
                "sacco_a_pelo_per_campeg_01",
                "zaino_per_montagna",
            ],
        },
    ),
    Category(
        slug="musical-instruments",
        name="Musical Instruments",
        sku_prefix="MUS",
        price_range=(19.99, 1299.99),
        descriptions=[
            "{title} with a rich, warm tone for beginners and pros.",
            "Make music with this {title}, tuned and ready to play.",
            "{title}: crafted for great sound on stage and at home.",
            "A beautifully finished {title} that rewards every practice session.",
        ],
        sources={
            "recreation/music": [
                "guitar_ganson",
                "guitar_jarno_vasamaa1",
                "guitar_jarno_vasamaa2",
                "guitar_profile_philippe__01",
                "electric_guitar_andrea__01r",
                "bass_guitar_a.j._ashton_",
                "violin_ganson",
                "violin_colour_ganson",
                "violin_mo_01",
                "cello_ganson",
                "cello_mo_01",
                "harp1_ganson",
                "harp2_ganson",
                "harp3_ganson",
                "harp_mo_01",
                "piano_geraint_luff_01",
                "xylophone_ganson",
                "drums_jarno_vasamaa_",
                "africandrum_benji_park_",
                "africandrum_benji_park1",
                "africandrum_benji_park2",
                "djambf_ganson",
                "derbouk_jurgen_01",
                "war_drum_enrique_meza_c_01",
                "maracas_ganson",
                "flute_ganson",
                "oboe_ganson",
                "saxophone_jarno_vasamaa_",
                "french_horn_ganson",
                "tenor_trombone_ganson",
                "trumpet_b_flat__ganson",
                "trumpet_b_flat_colour_ganso",
                "trumpet_pocket__ganson",
                "trumpet_pocket_colour_ganso",
                "trumpet_herald__ganson",
                "trumpet_harmon_mute__ganson",
                "trumpet_straight_mute_ganson",
                "microphone_stand_gerald__01",
            ],
        },
    ),
    Category(
        slug="office-supplies",
        name="Office Supplies",
        sku_prefix="OFF",
        price_range=(0.99, 39.99),
        descriptions=[
            "{title} to keep your desk organised and productive.",
            "Everyday {title} for the office, classroom or home study.",
            "{title}: a reliable desk essential at a great price.",
            "Stock up on {title} for work and school.",
        ],
        sources={
            "office": [
                "pen_01",
                "ballpoint_pen_jonathan_d_01",
                "pen_pencil_darkon_01",
                "pen_sek_",
                "pen_uliphant_01",
                "feather",
                "pencil_benji_park_01",
                "pencil_jonathan_dietrich_01",
                "crayon",
                "eraser",
                "scissors",
                "scissors_01",
                "scissors_forbici_franc_",
                "stappler",
                "pinzatrice_rollandin_arc_01",
                "scotch_rollandin_france_01",
                "paperclip",
                "clips_architetto_frances_01",
                "puntine_architetto_franc_01",
                "thumbtack_linda_kim_01",
                "pin_-red_nicu_buculei_01",
                "pin_-_blue_nicu_buculei_01",
                "pin_-_green_nicu_buculei_01",
                "pin_-_yellow_nicu_bucule_01",
                "note_with_paperclip_nicu_01",
                "note_with_pin_nicu_bucul_01",
                "clipboard_01",
                "appunti_architetto_franc_01",
                "folder1",
                "folder_01",
                "folder_juliane_krug_01",
                "fancy_folder_01",
                "fancy_folder_02",
                "cartella_dossier_direct_01",
                "box_with_folders_nicu_bu_01",
                "envelope_01",
                "envelope_juliane_krug_01",
                "envelop_rikva_01",
                "stamp_01",
                "blue_stamper_orbu_",
                "calculator",
                "calcolatrice_architetto__01",
                "simple_calculator_01",
                "desk_lamp_gerald_g._01",
                "magnifying_glass_01",
            ],
            "unsorted": ["blocco_notes"],
            "education": ["colori_01"],
        },
    ),
    Category(
        slug="model-vehicles",
        name="Model Vehicles",
        sku_prefix="VEH",
        price_range=(9.99, 149.99),
        descriptions=[
            "Detailed scale model: {title}, painted and ready for display.",
            "{title} collector's model with authentic details.",
            "A {title} model that looks great on any shelf.",
            "{title}: a faithful replica for collectors and young drivers alike.",
        ],
        sources={
            "transportation": [
                "car_jamin_ellis_",
                "sportcar_sergio_luiz_ara_01",
                "dodge_neon_green_ganson",
                "dodge_neon_pink_ganson",
                "skoda_car_alejandro_teja_",
                "old_car_lumen_design_st_r",
                "road_runner_ganson",
                "formula_one_car_gerald_g_01",
                "blazer_01",
                "toyota_land_cruiser_ganson",
                "hummer_01",
                "hummer_03",
                "hummer_05",
                "hummer_07",
                "big_truck_01",
                "small_truck_steffen_gluc_01",
                "old_truck_indana_model__01",
                "truck_jarno_vasamaa_",
                "truck_jarno_vasamaa1",
                "bus1_jarno_vasamaa_01",
                "bus2_jarno_vasamaa_01",
                "tramway_lumen_design_stu_01",
                "motorcycle_jarno_vasama_",
                "bike_tobias_jakobs_",
                "pallone_aerestatico_arch_01",
            ],
            "transportation/boating": [
                "boat_jarno_vasamaa_",
                "boat_jarno_vasamaa1",
                "sailboat_illustration",
            ],
            "transportation/vehicles": [
                "car",
                "4wd",
                "trattore_architetto_fran_01",
                "bicycle_01",
                "vtt_02",
                "trawler_01",
                "aircraft_jarno_vasamaa_",
                "aircraft_jarno_vasamaa1",
                "aircraft_jarno_vasamaa2",
                "aircraft_jarno_vasamaa3",
                "aircraft_jarno_vasamaa4",
            ],
        },
    ),
]

# --------------------------------------------------------------------------
# Titles.  Most titles are derived automatically from the file name by
# dropping the author suffix that Open Clip Art appended (and the trailing
# counters).  Non-English or unclear names get an explicit override.
# --------------------------------------------------------------------------

# Author names (and their truncated forms) that appear as file-name suffixes.
AUTHOR_TOKENS = {
    "a.j.",
    "aj",
    "afief",
    "alejandro",
    "andrea",
    "andremarcel.",
    "anthony",
    "architetto",
    "as",
    "ashton",
    "auban",
    "balin",
    "benji",
    "bersac",
    "boyer",
    "brice",
    "bogdan",
    "bucu",
    "buculei",
    "caiafa",
    "christian",
    "colin",
    "costea",
    "daniel",
    "dave",
    "darkon",
    "davek",
    "davide",
    "dietrich",
    "eady",
    "einar",
    "ellis",
    "enrique",
    "etienne",
    "fco.",
    "francesco",
    "frederic",
    "frouke",
    "gabrielle",
    "ganson",
    "gerald",
    "gerhard",
    "geraint",
    "gino",
    "gluc",
    "goneri",
    "halumi",
    "hart",
    "indana",
    "israel",
    "jaime",
    "jakobs",
    "jamin",
    "james",
    "jarno",
    "jean",
    "jean-victor",
    "jeff",
    "joel",
    "joerg",
    "jon",
    "jonathan",
    "joseph",
    "juliane",
    "jurgen",
    "k",
    "kilfige",
    "kim",
    "krug",
    "leif",
    "liekens",
    "linda",
    "lodahl",
    "luff",
    "lumen",
    "marcelo",
    "martin",
    "mateya",
    "mauro",
    "mazdac",
    "merzok",
    "meza",
    "michael",
    "mo",
    "montes",
    "moore",
    "nathan",
    "nicu",
    "olivier",
    "olivo",
    "orbu",
    "page",
    "park",
    "pena",
    "pesent",
    "peterm",
    "peterm1",
    "petri",
    "philippe",
    "rivera",
    "rollandin",
    "romus",
    "rosenbauer",
    "ruud",
    "sanchez",
    "schmidt-li",
    "sergio",
    "shandy",
    "simps",
    "soares",
    "steele",
    "steffen",
    "steltenpo",
    "structor",
    "sek",
    "tanguy",
    "terry",
    "teudimundo",
    "tobias",
    "toh",
    "uliphant",
    "valessio",
    "vasamaa",
    "victor",
    "virgin",
    "vladimir",
    "william",
    "yager",
    "yen",
}
# Truncated author tokens only count when they are the last meaningful token.
AUTHOR_PREFIXES = (
    "architett",
    "archit",
    "archi",
    "arch",
    "frances",
    "franc",
    "fran",
    "fra",
    "vasam",
    "nicu",
    "bucul",
    "jean",
    "bali",
    "bal",
    "ba",
    "diet",
    "di",
    "jona",
    "teja",
    "gelm",
    "bianc",
    "hern",
    "aras",
    "ara",
    "gluc",
    "natha",
    "bogda",
    "bogd",
    "benji",
    "moor",
    "jurg",
    "mazd",
    "mich",
    "gabri",
    "now",
    "stu",
    "st",
)

TITLE_OVERRIDES = {
    # fruit & vegetables
    "applf": "Shiny Apple",
    "apple_martin_schmidt-li_01r": "Gala Apple",
    "cartoon_apple_k_yager_01": "Cartoon Apple",
    "pera_architetto_francesc_01": "Bartlett Pear",
    "la_prugna_architetto_fra_01": "Plums",
    "prune": "Plum",
    "pesca_architetto_frances_01": "Ripe Peach",
    "rondelle_d_orange_01": "Orange Wheel",
    "lemon_whole_ganson": "Whole Lemon",
    "lemon_half_ganson": "Half Lemon",
    "lime_whole_ganson": "Whole Lime",
    "lime_half_ganson": "Half Lime",
    "grapes_simple": "Seedless Grapes",
    "melon_goneri_le_bouder_01": "Cantaloupe Melon",
    "pasteque_01": "Watermelon Wedge",
    "champignon_01": "Button Mushroom",
    "aglio_architetto_frances_01": "Garlic Bulbs",
    "cayenne_pepper_1_simple_01": "Cayenne Pepper",
    "habanero_pepper_1_simpl_01": "Habanero Pepper",
    "pannocchia_di_gran_turc_01": "Sweet Corn",
    "peperoncino_pepper_fra_": "Chili Peppers",
    "ravanello_architetto_fra_01": "Radish Bunch",
    "what_s_up_doc_01": "Carrot",
    "pomodori_architetto_fran_01": "Tomatoes",
    "zucca_architetto_frances_01": "Pumpkin",
    "onion_joerg_rosenbauer_01": "Onion",
    # bakery & sweets
    "cake1_jarno_vasamaa_01": "Wedding Cake",
    "cake_etienne_bersac_r": "Cream Cake",
    "flat_cake_jean-victor_ba_01": "Party Cake",
    "gateau_jean_victor_balin_": "Layer Cake",
    "pink_cake_gabrielle_now_r": "Pink Sponge Cake",
    "torta_architetto_frances_01": "Celebration Cake",
    "muffin_jean_victor_balin_": "Cherry Cupcake",
    "pie_apple": "Apple Pie",
    "pie_cherry": "Cherry Pie",
    "pie_pumpkin": "Pumpkin Pie",
    "flan_jean-victor_balin_01": "Custard Tart",
    "pudim_valessio_soares_de_": "Caramel Pudding",
    "gauffre_au_chocolat_01": "Chocolate Waffle",
    "candy_01": "Wrapped Candy",
    "candy_02": "Striped Candy",
    "candy_10": "Candy Cane",
    "candy_20": "Cherry Candy",
    "candy_21": "Orange Candy",
    "candy_22": "Lime Candy",
    "candy_30": "Swirl Lollipop",
    "candy_31": "Orange Swirl Lollipop",
    "lollipop_dave_pena_01": "Lollipop",
    "cone1_ganson": "Single Scoop Cone",
    "cone2_ganson": "Double Scoop Cone",
    "cone3_ganson": "Triple Scoop Cone",
    "cone4_ganson": "Pistachio Triple Cone",
    "cone_alt1": "Vanilla Ice Cream Cone",
    "cone_alt_2": "Neapolitan Ice Cream Cone",
    "cone_alt3": "Mint Ice Cream Cone",
    "cone_alt4": "Four Scoop Ice Cream Cone",
    "cone_soft_chocolate": "Chocolate Soft Serve",
    "cone_soft_vanilla": "Vanilla Soft Serve",
    "gelato_all_39_italiana_a_01": "Italian Gelato",
    "ice_cream_cone_linda_kim_01": "Ice Cream Cone",
    "glace_italienne_jean-vic_01": "Soft Serve Cone",
    "glace_01_jean-victor_bal_01": "Chocolate Ice Lolly",
    "glace_2_jean-victor_bali_01": "Choc Ice Bar",
    "glace_03_jean-victor_bal_01": "Fruit Ice Pop",
    "glace_4_jean-victor_bali_01": "Dipped Ice Cream Bar",
    "glace_05_jean-victor_bal_01": "Berry Ice Pop",
    "glace_06_jean-victor_bal_01": "Rocket Ice Pop",
    "glace_7_jean-victor_bali_01": "Striped Ice Lolly",
    "bread_01": "Bread Loaf",
    "croissant_01": "Butter Croissant",
    "croissant_gerald_g._01": "Croissant",
    "muffin1": "Chocolate Chip Muffin",
    "muffin2": "Bran Muffin",
    "muffin_3": "Blueberry Muffin",
    "pancakes_ganson": "Pancake Stack",
    "pancakes_berries": "Berry Pancakes",
    "pretzel_01": "Soft Pretzel",
    "candied_apples_ganson": "Candy Apples",
    # beverages
    "bottled_drink": "Bottled Soda",
    "pop_can": "Cola Can",
    "softdrink_icon_01": "Sparkling Water",
    "lattine_di_birra_archite_01": "Beer Can Six Pack",
    "milk_carton_jarno_vasama_": "Milk Carton",
    "milk_ganson": "Milk Carton Litre",
    "lemonade_linda_kim_01": "Iced Lemonade",
    "drinking_glass_with_red_punch_01": "Fruit Punch",
    "glass": "Glass of Water",
    "glass_01": "Tumbler of Water",
    "coffee": "Coffee Cup",
    "coffee_ganson": "Coffee Mug",
    "coffe_tea_01": "Cup of Tea",
    "cuppa_schwoo_01": "Cuppa Tea",
    "tazza_di_caffe_architett_01": "Espresso Cup",
    "teacup_ganson": "Teacup and Saucer",
    "kubek_herbaty_-_mug_of__01": "Mug of Tea",
    "zielony_kubek_herbaty_-_01": "Green Tea Mug",
    "a_teapot_01": "Teapot",
    "teapot_ganson": "Porcelain Teapot",
    "teiera_tazza_architetto__01": "Teapot and Cup Set",
    "beer": "Beer Mug",
    "beer1": "Draught Beer",
    "bottiglia_di_vino_pregi_01": "Red Wine Bottle",
    "ontologia_del_vino_archi_01": "Vintage Wine Bottle",
    "wine": "Glass of Red Wine",
    "wine_glass_christian_h._": "Wine Glass",
    "cocktail_daniel_steele_r": "Cocktail",
    "juice_glass_andremarcel._01": "Orange Juice Glass",
    # clothing & accessories
    "camicia_in_seta_architet_01": "Silk Shirt",
    "t-shirt_01": "Black T-Shirt",
    "t-shirt_02": "Logo T-Shirt",
    "t-shirt_03": "Navy T-Shirt",
    "tie_-_clothing_nicu_bucu_01": "Bow Tie",
    "thongs_01": "Flip Flops",
    "earring_frouke_01": "Drop Earring",
    "gold_chain_curved_as_a__01": "Gold Chain Necklace",
    "gold_chain_of_round_lin_01": "Gold Link Bracelet",
    "propeller": "Propeller Cap",
    "hat_-_clothing_nicu_bucu_01": "Cowboy Hat",
    "hat_-_clothing_nicu_bucu_02": "Team Baseball Cap",
    "hat_-_clothing_nicu_bucu_03": "Wide Brim Top Hat",
    "hat_-_clothing_nicu_bucu_04": "Fez",
    "hat_-_clothing_nicu_bucu_05": "Silk Top Hat",
    "wedding_rings_jarno_vas_": "Gold Wedding Rings",
    "pantyhose_collant_rolla_": "Sheer Pantyhose",
    "pantyhose_rollandin_fra1": "Opaque Tights",
    "Attaccapanni_con_vestito_da_donna": "Evening Dress",
    "vestito_rosa": "Pink Polka Dot Dress",
    "calzettoni": "Knee Socks",
    "borsetta": "Leather Handbag",
    "borsa_estiva_architetto__01": "Summer Tote Bag",
    "valigie_bags_architetto__01": "Travel Bag Set",
    "little_tan_suitcase_jona_": "Tan Suitcase",
    "tophat_benji_park_01": "Top Hat",
    "umbrella": "Rainbow Umbrella",
    # computers & electronics
    "computer": "Desktop Computer",
    "computer1": "Desktop PC",
    "computer2": "Desktop PC with Tower",
    "computer-aj_aj_ashton_01": "Home Computer",
    "desktop": "Desktop Case",
    "tower": "Tower PC",
    "gnome-fs-client": "Compact Computer",
    "workstation_hash_0x89c79_01": "Workstation",
    "laptop": "Laptop",
    "laptop_01": "Silver Laptop",
    "lcd": "LCD Display",
    "flat_screen_gino_rivera_01": "Flat Screen Monitor",
    "lcd_monitor_shandy_brown_": "LCD Monitor",
    "lcd_monitor_the_structor_": "Widescreen LCD Monitor",
    "doublesight_dual_monito_01": "Dual Monitor Stand",
    "schermo_macintosh_archit_01": "All-in-One Computer",
    "video1_sergio_luiz_arauj_01": "CRT Monitor",
    "video_lcd_sergio_luiz_ar_01": "LCD Screen",
    "computer_keyboard_01": "Computer Keyboard",
    "keyboard_01": "Compact Keyboard",
    "mouse_scroll_fco._andrad_01": "Scroll Mouse",
    "mouse2": "Wired Mouse",
    "printer_nicu_buculei_01": "Inkjet Printer",
    "laserprinter": "Laser Printer",
    "etiquette_printer_01": "Photo Printer",
    "stampante_architetto_fra_01": "Office Printer",
    "etiquette_scanner_01": "Flatbed Scanner",
    "hub": "Network Switch",
    "gnome-dev-harddisk": "Hard Disk Drive",
    "unita_disco_rigido_archi_01": "External Storage Drive",
    "usb_memory_stick_01": "USB Memory Stick",
    "digital-camera_aj_ashton_01": "Compact Digital Camera",
    "digital_camera_nicu_bucu_01": "Digital Camera",
    "handheld_gps_gerald_g._01": "Handheld GPS",
    "crt_monitor_01": "Retro CRT Monitor",
    "etiquette_laptop_01": "Notebook Computer",
    "green_computer_merzok_01": "Office Computer",
    "pale_server_teudimundo_01": "Server Tower",
    "server_olivier_boyer_01": "Rack Server",
    "pc_speaker_joel_montes_d_01": "PC Speakers",
    "webcam_mazdac_01": "Webcam",
    "slim_cd_drive_frederic_m_01": "Slim CD Drive",
    "floppy_disk_architetto_f_01": "Floppy Disks",
    "nikon_coolpix_auban_": "Point and Shoot Camera",
    "mobile": "Mobile Phone",
    "mobile_phone_01": "Classic Mobile Phone",
    "slim_cell_phone_israel_c_01": "Slim Cell Phone",
    "handphone_toh_yen_cheng_01": "Flip Phone",
    "ip_phone_michael_hart_r": "IP Desk Phone",
    "camcorder_jaime_sanchez1": "Camcorder",
    "sony_clie_william_page_": "Handheld PDA",
    # tools & hardware
    "hammer_nicu_buculei_01": "Claw Hammer",
    "hammer_peterm1": "Hammer",
    "construction_hammer_jon__01": "Framing Hammer",
    "blacksmith_hammer_ganson": "Sledgehammer",
    "wooden_mallot_benji_park_": "Wooden Mallet",
    "utensile_sega_architetto_01": "Hand Saw",
    "saw_peterm_": "Crosscut Saw",
    "tool": "Pliers",
    "tools_nicu_buculei_01": "Wrench and Screwdriver Set",
    "utensili_chiave_e_cacci_01": "Spanner and Screwdriver",
    "viti_architetto_francesc_01": "Wood Screws",
    "livella_architetto_franc_01": "Spirit Level",
    "blacksmith_anvil_ganson": "Anvil",
    "brush_roller_costea_bogd_01": "Paint Roller Set",
    "spaclu_costea_bogdan_01": "Putty Knife",
    "roundpointshovel_benji_p_01": "Round Point Shovel",
    "leafrake_benji_park_01": "Leaf Rake",
    "bypasslopper_benji_park_01": "Bypass Lopper",
    "hedgeshear_benji_park_01": "Hedge Shears",
    "secchio_e_spugna_archite_01": "Bucket and Sponge",
    "padlock_aj_ashton_01": "Brass Padlock",
    "lock": "Padlock",
    "lock_-_open_afief_halumi_01": "Open Padlock",
    "keyring_as_": "Key Ring",
    "motosega": "Chainsaw",
    "sega_per_legno": "Wood Saw",
    "metro_avvolgibile": "Tape Measure",
    "carretta_da_cantiere": "Wheelbarrow",
    "scala_doppia": "Step Ladder",
    "lampada_da_cantiere": "Work Light",
    "pinzatrice_grigia": "Staple Gun",
    "guanti__e_pinze": "Work Gloves and Pliers",
    # sports & outdoors
    "soccer_ballon_tanguy_jac_": "Match Soccer Ball",
    "football_ball_brice_boye_01": "Training Soccer Ball",
    "cricket_bat_01": "Cricket Bat",
    "beach_ball_01": "Beach Ball",
    "volleball_net_angelo_gel_01": "Volleyball Net",
    "volley-ball_andrea_bianc_01": "Volleyball",
    "volley_ball_angelo_gelmi_01": "Beach Volleyball",
    "baseball_anthony_liekens_01": "Baseball",
    "basebalm_ganson": "Leather Baseball",
    "table_tennis_racquets_o_01r": "Table Tennis Paddles",
    "8_ball_jarno_vasamaa": "Eight Ball",
    "9_ball_jarno_vasamaa": "Nine Ball",
    "8ball_nicu_buculei_01": "Pool Eight Ball",
    "8ball_form_jarno_vasama": "Billiard Ball Set",
    "blowling_ball_01": "Bowling Ball",
    "target_with_arrow_virgin_01": "Archery Target",
    "cronometro_mauro_olivo_01": "Stopwatch",
    "binoculars_vladimir_hern_01": "Binoculars",
    "rollerblades": "Inline Skates",
    "sledge_01": "Wooden Sled",
    "scuba_tank_01": "Scuba Tank",
    "nitrox_scuba_tank_01": "Nitrox Scuba Tank",
    "beachball_v0.1": "Striped Beach Ball",
    "surfboard_davek_01": "Longboard Surfboard",
    "pattino_architetto_franc_01": "Ice Skate",
    "tenda_da_campeggio_archi_01": "Camping Tent",
    "sacco_a_pelo_per_campeg_01": "Sleeping Bag",
    "zaino_per_montagna": "Hiking Backpack",
    "ball": "Star Play Ball",
    "bussola_architetto_franc_01": "Brass Pocket Compass",
    "bussola_mauro_olivo_01": "Hiking Compass",
    "hurricane_lamp_ganson": "Camping Lantern",
    "telescope_01": "Tripod Telescope",
    # musical instruments
    "guitar_ganson": "Acoustic Guitar",
    "guitar_jarno_vasamaa1": "Cutaway Acoustic Guitar",
    "guitar_jarno_vasamaa2": "Electric Guitar",
    "guitar_profile_philippe__01": "Classical Guitar",
    "electric_guitar_andrea__01r": "Solid Body Electric Guitar",
    "bass_guitar_a.j._ashton_": "Bass Guitar",
    "violin_colour_ganson": "Violin",
    "violin_ganson": "Student Violin",
    "violin_mo_01": "Violin Duo",
    "cello_mo_01": "Concert Cello",
    "harp1_ganson": "Celtic Harp",
    "harp2_ganson": "Concert Harp",
    "harp3_ganson": "Lap Harp",
    "harp_mo_01": "Folk Harp",
    "piano_geraint_luff_01": "Upright Piano",
    "drums_jarno_vasamaa_": "Drum Kit",
    "africandrum_benji_park_": "Tall African Drum",
    "africandrum_benji_park1": "African Drum",
    "africandrum_benji_park2": "Hand Drum",
    "djambf_ganson": "Djembe",
    "derbouk_jurgen_01": "Darbuka",
    "war_drum_enrique_meza_c_01": "Ceremonial Drum",
    "tenor_trombone_ganson": "Tenor Trombone",
    "trumpet_b_flat__ganson": "B Flat Trumpet",
    "trumpet_b_flat_colour_ganso": "Brass B Flat Trumpet",
    "trumpet_pocket__ganson": "Pocket Trumpet",
    "trumpet_pocket_colour_ganso": "Brass Pocket Trumpet",
    "trumpet_herald__ganson": "Herald Trumpet",
    "trumpet_harmon_mute__ganson": "Harmon Trumpet Mute",
    "trumpet_straight_mute_ganson": "Straight Trumpet Mute",
    "microphone_stand_gerald__01": "Microphone Stand",
    # office supplies
    "pen_01": "Fountain Pen",
    "ballpoint_pen_jonathan_d_01": "Ballpoint Pen",
    "pen_pencil_darkon_01": "Pen and Pencil Set",
    "pen_sek_": "Gel Pen",
    "pen_uliphant_01": "Marker Pen",
    "feather": "Quill Pen",
    "pencil_benji_park_01": "Sharpened Pencil",
    "pencil_jonathan_dietrich_01": "Yellow Pencil",
    "crayon": "Wax Crayon",
    "scissors": "Office Scissors",
    "scissors_01": "Scissors",
    "scissors_forbici_franc_": "Paper Scissors",
    "stappler": "Stapler",
    "pinzatrice_rollandin_arc_01": "Desk Stapler",
    "scotch_rollandin_france_01": "Tape Dispenser",
    "clips_architetto_frances_01": "Paper Clips",
    "puntine_architetto_franc_01": "Push Pins",
    "thumbtack_linda_kim_01": "Thumbtack",
    "pin_-red_nicu_buculei_01": "Red Map Pin",
    "pin_-_blue_nicu_buculei_01": "Blue Map Pin",
    "pin_-_green_nicu_buculei_01": "Green Map Pin",
    "pin_-_yellow_nicu_bucule_01": "Yellow Map Pin",
    "note_with_paperclip_nicu_01": "Memo Pad with Clip",
    "note_with_pin_nicu_bucul_01": "Pinned Sticky Note",
    "appunti_architetto_franc_01": "Notepad",
    "folder1": "File Folder",
    "folder_01": "Manila Folder",
    "folder_juliane_krug_01": "Document Folder",
    "fancy_folder_01": "Presentation Folder",
    "fancy_folder_02": "Ring Binder",
    "cartella_dossier_direct_01": "Filing Folder",
    "box_with_folders_nicu_bu_01": "Archive Box with Folders",
    "envelope_01": "Envelope",
    "envelope_juliane_krug_01": "Mailing Envelope",
    "envelop_rikva_01": "Letter Envelope",
    "stamp_01": "Rubber Stamp",
    "blue_stamper_orbu_": "Self-Inking Stamp",
    "calcolatrice_architetto__01": "Desk Calculator",
    "simple_calculator_01": "Pocket Calculator",
    "desk_lamp_gerald_g._01": "Desk Lamp",
    "magnifying_glass_01": "Magnifying Glass",
    "blocco_notes": "Spiral Notebook",
    "colori_01": "Colored Pencils",
    # model vehicles
    "car_jamin_ellis_": "Blue Sedan",
    "sportcar_sergio_luiz_ara_01": "Sports Coupe",
    "dodge_neon_green_ganson": "Green Racing Compact",
    "dodge_neon_pink_ganson": "Pink Racing Compact",
    "skoda_car_alejandro_teja_": "Family Hatchback",
    "old_car_lumen_design_st_r": "Vintage Car",
    "road_runner_ganson": "Muscle Car",
    "formula_one_car_gerald_g_01": "Formula One Car",
    "blazer_01": "Sport Utility Vehicle",
    "toyota_land_cruiser_ganson": "Off-Road Cruiser",
    "hummer_01": "Military Utility Vehicle",
    "hummer_03": "Utility Truck",
    "hummer_05": "Army Utility Truck",
    "hummer_07": "Armoured Utility Vehicle",
    "big_truck_01": "Semi Truck",
    "small_truck_steffen_gluc_01": "Delivery Van",
    "old_truck_indana_model__01": "Vintage Pickup Truck",
    "truck_jarno_vasamaa_": "Red Lorry",
    "truck_jarno_vasamaa1": "Dump Truck",
    "bus1_jarno_vasamaa_01": "Red City Bus",
    "bus2_jarno_vasamaa_01": "Blue City Bus",
    "tramway_lumen_design_stu_01": "Tram",
    "motorcycle_jarno_vasama_": "Motorcycle",
    "bike_tobias_jakobs_": "Penny Farthing",
    "boat_jarno_vasamaa_": "Sailing Boat",
    "boat_jarno_vasamaa1": "Schooner",
    "sailboat_illustration": "Sailboat",
    "pallone_aerestatico_arch_01": "Hot Air Balloon",
    "car": "Compact Car",
    "4wd": "Four Wheel Drive",
    "trattore_architetto_fran_01": "Farm Tractor",
    "bicycle_01": "City Bicycle",
    "vtt_02": "Mountain Bike",
    "trawler_01": "Fishing Trawler",
    "aircraft_jarno_vasamaa_": "Passenger Jet",
    "aircraft_jarno_vasamaa1": "Propeller Plane",
    "aircraft_jarno_vasamaa2": "Airliner",
    "aircraft_jarno_vasamaa3": "Light Aircraft",
    "aircraft_jarno_vasamaa4": "Business Jet",
}

# Filler words dropped from automatic titles ("an_apple", "pear_simple").
DROP_WORDS = {"a", "an", "another", "simple", "the"}

# Words that should keep a particular spelling in automatic titles.
WORD_FIXES = {"t-shirt": "T-Shirt", "usb": "USB", "lcd": "LCD", "crt": "CRT", "pc": "PC"}

# Distinguishing words used when two products end up with the same title.
VARIANT_WORDS = ["Classic", "Deluxe", "Premium", "Vintage", "Compact", "Original"]

# --------------------------------------------------------------------------
# Colour names
# --------------------------------------------------------------------------
COLOR_NAMES = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "grey"]


def classify_pixel(r: int, g: int, b: int) -> str:
    """Map one RGB pixel to a simple English colour name."""
    h, s, v = colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)
    hue = h * 360
    if v < 0.18:
        return "black"
    if s < 0.18 or (s < 0.3 and v < 0.35):
        if v > 0.85:
            return "white"
        return "black" if v < 0.3 else "grey"
    if 15 <= hue < 22 and s > 0.75 and 0.3 <= v < 0.65:
        return "red"  # saturated dark red shading, not brown
    if hue < 15 or hue >= 345:
        if v < 0.35:
            return "brown"
        return "pink" if s < 0.45 and v > 0.7 else "red"
    if hue < 45:
        return "brown" if v < 0.65 or s < 0.4 else "orange"
    if hue < 70:
        return "brown" if v < 0.5 else "yellow"
    if hue < 165:
        return "green"
    if hue < 255:
        return "blue"
    if hue < 290:
        return "purple"
    return "pink" if v > 0.55 else "purple"


def dominant_color(img: Image.Image) -> str:
    """Dominant non-transparent colour name, or "" if no colour clearly wins.

    Near-black pixels are counted with a low weight because clipart outlines
    are black but rarely what a shopper would call the product's colour.
    """
    small = img.copy()
    small.thumbnail((128, 128), Image.Resampling.NEAREST)  # no blended edge pixels
    counts = dict.fromkeys(COLOR_NAMES, 0.0)
    total = 0.0
    pixels = small.tobytes()
    for i in range(0, len(pixels), 4):
        r, g, b, a = pixels[i], pixels[i + 1], pixels[i + 2], pixels[i + 3]
        if a < 128:
            continue
        name = classify_pixel(r, g, b)
        weight = 0.35 if name == "black" else 1.0
        counts[name] += weight
        total += weight
    if total == 0:
        return ""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], COLOR_NAMES.index(kv[0])))
    (best, best_n), (_, second_n) = ranked[0], ranked[1]
    if best_n / total < 0.3 or best_n < 1.2 * second_n:
        return ""
    return best


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def seeded_fraction(key: str, salt: str, namespace: str = "") -> float:
    """A deterministic number in [0, 1) derived from a string (``namespace`` keeps another catalogue's apart)."""
    prefix = f"{namespace}:" if namespace else ""
    digest = hashlib.sha256(f"{prefix}{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def make_price(key: str, lo: float, hi: float, namespace: str = "") -> str:
    """Deterministic shop-style price such as 12.99 or 4.49 within [lo, hi]."""
    # log-uniform: cheap items are more common than expensive ones
    raw = lo * (hi / lo) ** seeded_fraction(key, "price", namespace)
    ending = [0.99, 0.49, 0.95, 0.99][int(seeded_fraction(key, "ending", namespace) * 4)]
    value = max(lo, min(hi, int(raw) + ending))
    return f"{value:.2f}"


def make_stock(key: str, namespace: str = "") -> str:
    """Deterministic stock level; about one product in eight is sold out."""
    fraction = seeded_fraction(key, "stock", namespace)
    return "0" if fraction < 0.125 else str(1 + int(fraction * 40))


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def auto_title(stem: str) -> str:
    """Human title from an Open Clip Art file name (author and counters removed)."""
    tokens = [t for t in re.split(r"[_\s]+", stem.lower().replace("_-_", "_")) if t and t != "-"]

    def is_counter(tok: str) -> bool:
        return bool(re.fullmatch(r"\d{1,2}[a-z]?|[a-z]|0x[0-9a-f]+", tok))

    while len(tokens) > 1 and is_counter(tokens[-1]):
        tokens.pop()
    for i in range(1, len(tokens)):
        tok = tokens[i].rstrip("0123456789")
        last = i == len(tokens) - 1
        if tok in AUTHOR_TOKENS or (last and tok.startswith(AUTHOR_PREFIXES)):
            tokens = tokens[:i]
            break
    while len(tokens) > 1 and is_counter(tokens[-1]):
        tokens.pop()
    tokens = [t for t in tokens if t not in DROP_WORDS] or tokens
    words = []
    for tok in tokens:
        for part in tok.split("-") if tok not in WORD_FIXES else [tok]:
            words.append(WORD_FIXES.get(part, part.capitalize()))
    return " ".join(words)


def make_title(stem: str) -> str:
    return TITLE_OVERRIDES.get(stem) or auto_title(stem)


def make_description(title: str, category: Category, key: str) -> str:
    templates = category.descriptions
    text = templates[int(seeded_fraction(key, "description") * len(templates))]
    text = text.format(title=title)
    return text[0].upper() + text[1:]


class Skip(Exception):
    """Raised when a source image is unusable."""


def open_rgba(path: Path) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as im:
                if im.width * im.height > MAX_SOURCE_PIXELS:
                    raise Skip(f"too large ({im.width}x{im.height})")
                im.load()
                return im.convert("RGBA")
        except Skip:
            raise
        except Exception as exc:  # broken or unreadable file
            raise Skip(f"unreadable ({exc.__class__.__name__}: {exc})") from exc


def content_box(img: Image.Image) -> tuple[tuple[int, int, int, int] | None, Image.Image]:
    """Bounding box of the visible content, and the image with a transparent
    background.  Fully opaque sources are treated as drawn on a plain
    background (the colour of the top-left pixel), which is made transparent."""
    alpha = img.getchannel("A")
    if alpha.getextrema()[0] < 255:  # has transparency
        mask = alpha.point(lambda a: 255 if a > ALPHA_VISIBLE else 0)
        return mask.getbbox(), img
    bg = Image.new("RGBA", img.size, img.getpixel((0, 0)))
    diff = ImageChops.difference(img, bg).convert("L").point(lambda d: 255 if d > 24 else 0)
    cutout = img.copy()
    cutout.putalpha(diff)
    return diff.getbbox(), cutout


def process_image(path: Path, max_transparent: float = MAX_TRANSPARENT) -> tuple[bytes, str]:
    """Convert one source file; returns (png_bytes, colour_name).

    ``max_transparent``: the share of transparent pixels above which a source is skipped as nearly empty.
    """
    img = open_rgba(path)
    w, h = img.size
    if w < MIN_SOURCE_SIDE or h < MIN_SOURCE_SIDE:
        raise Skip(f"tiny ({w}x{h})")
    box, img = content_box(img)
    hist = img.getchannel("A").histogram()
    transparent = sum(hist[: ALPHA_VISIBLE + 1]) / (w * h)
    if box is None or transparent > max_transparent:
        raise Skip(f"nearly empty ({transparent:.1%} transparent)")

    # Crop to the content, keep a small transparent margin, then downscale.
    img = img.crop(box)
    colour = dominant_color(img)
    pad = max(1, round(max(img.size) * PADDING))
    canvas = Image.new("RGBA", (img.width + 2 * pad, img.height + 2 * pad), (0, 0, 0, 0))
    canvas.paste(img, (pad, pad))
    if max(canvas.size) > MAX_SIDE:
        canvas.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    if max(canvas.size) < MIN_SOURCE_SIDE:
        raise Skip(f"content too small ({canvas.width}x{canvas.height})")

    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=True)
    return buf.getvalue(), colour


# --------------------------------------------------------------------------
# Main build
# --------------------------------------------------------------------------


@dataclass
class Product:
    category: Category
    stem: str
    source: Path
    data: bytes
    color: str
    title: str
    checksum: str
    image: str = ""
    sku: str = ""


def make_unique_titles(products: list[Product]) -> None:
    """Give every product a distinct title (case-insensitive)."""
    by_title: dict[str, list[Product]] = {}
    for p in products:
        by_title.setdefault(p.title.lower(), []).append(p)
    taken = set(by_title)
    for group in by_title.values():
        for index, p in enumerate(group):
            if index == 0:
                continue  # the first keeps its plain title
            candidates = []
            if p.color and p.color not in p.title.lower():
                candidates.append(f"{p.color.capitalize()} {p.title}")
            candidates += [f"{word} {p.title}" for word in VARIANT_WORDS]
            candidates += [f"{p.title} {n}" for n in range(2, 100)]
            for cand in candidates:
                if cand.lower() not in taken:
                    p.title = cand
                    taken.add(cand.lower())
                    break


def build(source: Path, out: Path) -> list[Product]:
    products: list[Product] = []
    seen_source: dict[str, str] = {}
    seen_output: dict[str, str] = {}
    for cat in CATEGORIES:
        kept = 0
        for folder, stems in cat.sources.items():
            for stem in stems:
                path = source / folder / f"{stem}.png"
                rel = path.relative_to(source)
                if not path.is_file():
                    print(f"  skip {rel}: missing", file=sys.stderr)
                    continue
                src_sum = hashlib.sha256(path.read_bytes()).hexdigest()
                if src_sum in seen_source:
                    print(f"  skip {rel}: same file as {seen_source[src_sum]}", file=sys.stderr)
                    continue
                seen_source[src_sum] = str(rel)
                try:
                    data, color = process_image(path)
                except Skip as why:
                    print(f"  skip {rel}: {why}", file=sys.stderr)
                    continue
                checksum = hashlib.sha256(data).hexdigest()
                if checksum in seen_output:
                    print(f"  skip {rel}: same output as {seen_output[checksum]}", file=sys.stderr)
                    continue
                seen_output[checksum] = str(rel)
                products.append(Product(cat, stem, rel, data, color, make_title(stem), checksum))
                kept += 1
        print(f"{cat.name}: {kept} images")

    make_unique_titles(products)

    images_dir = out / "images"
    if images_dir.exists():
        shutil.rmtree(images_dir)
    counters: dict[str, int] = {}
    for p in products:
        counters[p.category.slug] = counters.get(p.category.slug, 0) + 1
        p.sku = f"DEMO-{p.category.sku_prefix}-{counters[p.category.slug]:04d}"
        target = images_dir / p.category.slug / f"{slugify(p.title)}.png"
        if target.exists():  # cannot happen with unique titles, but be safe
            target = target.with_name(f"{target.stem}-{p.sku.lower()}.png")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(p.data)
        p.image = target.relative_to(out).as_posix()

    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["image", "title", "category", "description", "price", "sku", "color", "stock"])
        for p in products:
            key = str(p.source)
            writer.writerow(
                [
                    p.image,
                    p.title,
                    p.category.name,
                    make_description(p.title, p.category, key),
                    make_price(key, *p.category.price_range),
                    p.sku,
                    p.color,
                    make_stock(key),
                ]
            )
    return products


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        type=Path,
        default=Path("/usr/share/openclipart/png"),
        help="root of the openclipart-png tree (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("demo"),
        help="output folder for images/ and manifest.csv (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if not args.source.is_dir():
        parser.error(f"source folder not found: {args.source}")
    args.out.mkdir(parents=True, exist_ok=True)
    products = build(args.source, args.out)
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(
        f"wrote {len(products)} products; {args.out} now holds {size:,} bytes; manifest at {args.out / 'manifest.csv'}"
    )
    if size > SIZE_BUDGET:
        print(f"error: {args.out} exceeds the {SIZE_BUDGET:,} byte budget", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
