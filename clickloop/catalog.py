"""The embedded default dataset: a generated shop catalog with shopper queries and graded judgments.

Listings name products the way sellers do ("vacuum flask", "notebook sleeve"); shoppers ask the
way people talk ("coffee flask", "laptop bag") or describe a need ("something to keep coffee hot
all day"). So lexical matching finds part of the answer and misses the rest, which is the gap
learned expansion and dense retrieval are meant to close.

Hidden relevance of an item to a query asking for product type T (optionally with one attribute):
4 type T with the asked attribute (any item of T when none is asked), 3 type T otherwise,
2 a related or complementary type, 1 the same category, 0 anything else. Every non-zero pair
is judged. The whole dataset is a pure function of (config, seed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from clickloop.beir import Document, Qrels

# (listing wording, shopper wordings)
COLORS: dict[str, tuple[str, ...]] = {
    "midnight black": ("black",),
    "graphite": ("grey", "gray", "dark grey"),
    "navy": ("dark blue", "navy"),
    "forest green": ("green", "olive"),
    "crimson": ("red",),
    "ivory": ("white", "cream"),
    "sky blue": ("light blue", "blue"),
    "sandstone": ("beige", "tan"),
    "blush": ("pink",),
    "mustard": ("yellow",),
}

MATERIALS: dict[str, tuple[str, ...]] = {
    "stainless steel": ("steel", "metal"),
    "aluminum": ("aluminium", "metal"),
    "titanium": ("titanium", "ultralight"),
    "borosilicate glass": ("glass",),
    "BPA-free Tritan": ("plastic", "shatterproof"),
    "ABS polymer": ("plastic",),
    "bamboo": ("bamboo", "eco"),
    "walnut": ("wooden", "wood"),
    "full-grain leather": ("leather",),
    "organic cotton": ("cotton",),
    "merino wool": ("wool", "merino"),
    "ripstop nylon": ("nylon",),
    "recycled polyester": ("recycled", "polyester"),
    "goose down": ("down", "feather"),
    "synthetic insulation": ("synthetic", "vegan"),
    "neoprene": ("neoprene", "foam"),
    "natural rubber": ("rubber",),
    "silicone": ("silicone", "rubber"),
    "ceramic": ("ceramic", "porcelain"),
    "carbon fiber": ("carbon",),
    "cast iron": ("iron", "cast iron"),
    "enameled cast iron": ("enamel", "dutch oven style"),
    "high-carbon steel": ("carbon steel", "steel"),
    "Damascus steel": ("damascus", "japanese"),
    "closed-cell foam": ("foam",),
    "cork": ("cork",),
    "TPE": ("foam", "eco"),
    "sherpa fleece": ("fleece", "fuzzy"),
    "engineered mesh": ("mesh", "breathable"),
    "nylon webbing": ("nylon", "rope"),
    "cotton canvas": ("canvas",),
}

# Words every listing of a category may carry: they blur the lines between product types.
CATEGORY_BLURBS: dict[str, tuple[str, ...]] = {
    "outdoor": ("Built for trail, camp and backcountry use.", "Tested on alpine trips in every season.",
                "Light enough for long hikes.", "Packs small for travel."),
    "electronics": ("Works with iPhone, Android, Windows and Mac.", "Comes with a USB-C cable.",
                    "Firmware updates through the companion app.", "Certified for safety and low standby power."),
    "kitchen": ("Dishwasher safe parts.", "A favorite of home cooks and chefs.", "Food-safe and easy to clean.",
                "Fits in small kitchens."),
    "apparel": ("Machine washable.", "Relaxed, true-to-size fit.", "Made in a fair-trade certified factory.",
                "Tag-free comfort."),
    "home": ("Fits any bedroom or living room.", "Easy care and long lasting.", "Certified free of harmful substances.",
             "Arrives in compact packaging."),
    "fitness": ("Made for home workouts and the gym.", "Sweat-proof and easy to wipe down.",
                "Used by personal trainers.", "Stores in a corner or closet."),
    "office": ("Suits home offices and studios.", "Designed with ergonomists.", "Professional look for any desk.",
               "Easy assembly in minutes."),
    "pets": ("Vet-recommended design.", "Safe for puppies and kittens.", "Easy to wash.",
             "Tested by dogs and cats of every size."),
}

GENERIC_SENTENCES = (
    "Backed by a {years}-year warranty.",
    "Rated {rating} out of 5 by verified buyers.",
    "Designed in {city}.",
    "Ships in plastic-free packaging.",
    "Free returns within 30 days.",
    "Model {model}.",
)
CITIES = ("Portland", "Oslo", "Melbourne", "Denver", "Kyoto", "Vancouver", "Bristol", "Munich")
BRAND_PARTS = (
    ("North", "Summit", "Cedar", "Iron", "Blue", "Kettle", "Stone", "Lumen", "Pine", "Harbor", "Fox", "Atlas",
     "Bright", "Wild", "Copper", "Nova"),
    ("peak", "craft", "line", "works", "wave", "field", "forge", "haus", "trail", "labs", "co", "goods"),
)
MODEL_WORDS = ("Pro", "Lite", "Max", "Air", "Trail", "One", "Flex", "Plus", "Go", "Core")

# How shoppers phrase a described need; "{attr}" is a shopper attribute word.
NEED_TEMPLATES = ("something to {need}", "what do i need to {need}", "best thing to {need}", "{need}",
                  "how to {need}", "gift for someone who wants to {need}")
NEED_WITH_ATTRIBUTE_TEMPLATES = ("something {attr} to {need}", "{attr} thing to {need}")
SHOPPER_WITH_ATTRIBUTE_TEMPLATES = ("{attr} {term}", "{term} {attr}", "{term} in {attr}")
LISTING_WITH_ATTRIBUTE_TEMPLATES = ("{attr} {term}", "{term} {attr}")

TITLE_TEMPLATES = (
    "{brand} {name}, {material}, {size}",
    "{brand} {color} {material} {name}",
    "{name} by {brand} - {size}, {color}",
    "{brand} {model} {name} ({color})",
    "{brand} {model} {size} {name}",
)

ATTRIBUTE_KINDS = ("color", "material", "size")


@dataclass(frozen=True)
class ProductType:
    """A kind of product: how listings name and describe it, and how shoppers ask for it."""

    key: str
    category: str
    names: tuple[str, ...]  # listing wording
    shopper_terms: tuple[str, ...]  # what shoppers type, mostly other words
    needs: tuple[str, ...]  # use-cases shoppers describe instead of naming the product
    features: tuple[str, ...]  # listing description sentences
    materials: tuple[str, ...]  # keys of MATERIALS
    sizes: tuple[tuple[str, str], ...]  # (listing wording, shopper wording)
    related: tuple[str, ...] = ()  # keys of complementary or substitute types


def _sizes(*pairs: str) -> tuple[tuple[str, str], ...]:
    """Size options from alternating listing / shopper wordings."""
    return tuple(zip(pairs[::2], pairs[1::2], strict=True))


APPAREL_SIZES = _sizes("size S", "small", "size M", "medium", "size L", "large", "size XL", "xl")
VOLUME_SIZES = _sizes("350 ml", "small", "750 ml", "medium", "1.2 liter", "large")

PRODUCT_TYPES: tuple[ProductType, ...] = (
    # outdoor
    ProductType(
        "vacuum_flask", "outdoor", ("vacuum flask", "insulated bottle", "thermal flask"),
        ("thermos", "coffee flask", "hot drink bottle", "tea flask"),
        ("keep coffee hot all day", "keep soup warm for lunch", "bring hot tea on a winter walk"),
        ("Double-wall vacuum insulation holds temperature for 24 hours.", "Leakproof screw lid doubles as a cup.",
         "Powder-coated exterior resists dents and condensation.", "Wide mouth takes ice cubes and tea bags."),
        ("stainless steel", "titanium", "borosilicate glass"), VOLUME_SIZES, ("water_bottle", "camp_stove")),
    ProductType(
        "tent", "outdoor", ("backpacking tent", "dome tent", "camping shelter"),
        ("camping tent", "pop up tent", "festival tent", "tent for the woods"),
        ("sleep outside on a camping trip", "stay dry overnight in the mountains", "camp at a music festival"),
        ("Freestanding pole frame pitches in minutes.", "Full-coverage rainfly with taped seams.",
         "Two vestibules keep boots and packs out of the rain.", "Mesh inner walls let the air flow."),
        ("ripstop nylon", "recycled polyester", "cotton canvas"),
        _sizes("1-person", "solo", "2-person", "for two", "4-person", "family"), ("sleeping_bag", "sleeping_pad")),
    ProductType(
        "sleeping_bag", "outdoor", ("mummy sleeping bag", "sleeping bag", "down bag"),
        ("sleeping bag", "camping sleep sack", "warm bag for camping"),
        ("stay warm sleeping in a tent", "sleep outside in freezing weather", "spend a cold night outdoors"),
        ("Draft collar and hood trap body heat.", "Comfort rated to -5 °C.",
         "Compresses into the included stuff sack.", "Two-way zipper for venting on warm nights."),
        ("goose down", "synthetic insulation", "recycled polyester"),
        _sizes("kids length", "for kids", "regular length", "regular", "long length", "tall person"),
        ("tent", "sleeping_pad")),
    ProductType(
        "sleeping_pad", "outdoor", ("sleeping pad", "inflatable pad", "camp mat"),
        ("air mattress", "camping mattress", "ground mat"),
        ("sleep comfortably on hard ground", "insulate from the cold ground when camping"),
        ("R-value of 4.2 for three-season use.", "Inflates in ten breaths with the pump sack.",
         "Quiet baffles that do not crinkle.", "Rolls up to the size of a water bottle."),
        ("ripstop nylon", "closed-cell foam"),
        _sizes("short", "short", "regular", "regular", "wide long", "wide"), ("sleeping_bag", "tent")),
    ProductType(
        "headlamp", "outdoor", ("LED headlamp", "head torch", "rechargeable headlamp"),
        ("head flashlight", "forehead light", "running light"),
        ("see the trail at night", "have hands free light for night running", "fix the car in the dark"),
        ("Red night-vision mode preserves your eyes' adaptation.", "USB-C battery lasts 40 hours on low.",
         "Tilting lamp head aims the beam.", "IPX7 waterproof housing."),
        ("ABS polymer", "aluminum"), _sizes("200 lumen", "basic", "400 lumen", "bright", "900 lumen", "super bright"),
        ("tent", "trekking_poles")),
    ProductType(
        "trekking_poles", "outdoor", ("trekking poles", "hiking poles", "walking staffs"),
        ("walking sticks", "hiking sticks", "nordic walking poles"),
        ("take pressure off my knees on descents", "keep balance crossing streams"),
        ("Flick-lock adjustment from 100 to 135 cm.", "Cork grips wick away sweat.",
         "Tungsten carbide tips with rubber feet for pavement.", "Padded straps for long days."),
        ("aluminum", "carbon fiber"), _sizes("foldable", "packable", "telescoping", "adjustable", "fixed", "one piece"),
        ("daypack", "headlamp")),
    ProductType(
        "camp_stove", "outdoor", ("backpacking stove", "camp stove", "gas burner"),
        ("portable cooker", "camping cooker", "jetboil"),
        ("boil water on a camping trip", "cook dinner at the campsite"),
        ("Boils a liter of water in three minutes.", "Piezo ignition lights with a click.",
         "Folds to fit inside a cook pot.", "Wind-resistant burner head."),
        ("stainless steel", "titanium", "aluminum"),
        _sizes("single burner", "small", "two burner", "double", "tabletop", "big"), ("vacuum_flask", "tent")),
    ProductType(
        "daypack", "outdoor", ("hiking daypack", "trail backpack", "rucksack"),
        ("day bag", "hiking bag", "bag for hiking"),
        ("carry water and snacks on a day hike", "pack a lunch and a jacket for the trail"),
        ("Ventilated back panel keeps you cool.", "Hip belt pockets for phone and snacks.",
         "Hydration sleeve fits a 3 liter reservoir.", "Integrated rain cover."),
        ("ripstop nylon", "recycled polyester", "cotton canvas"),
        _sizes("18 liter", "small", "24 liter", "medium", "32 liter", "large"), ("water_bottle", "trekking_poles")),
    # electronics
    ProductType(
        "laptop_sleeve", "electronics", ("notebook sleeve", "laptop sleeve", "padded laptop case"),
        ("laptop bag", "computer bag", "macbook cover"),
        ("carry my laptop to class", "protect a computer inside a backpack"),
        ("Plush lining prevents scratches.", "Water-repellent shell.", "Front pocket for charger and mouse.",
         "Slim profile slides into any bag."),
        ("neoprene", "full-grain leather", "recycled polyester"),
        _sizes("13-inch", "13 inch", "14-inch", "14 inch", "16-inch", "16 inch"), ("usb_charger", "daypack")),
    ProductType(
        "earbuds", "electronics", ("true wireless earbuds", "in-ear headphones", "bluetooth earphones"),
        ("airpods alternative", "wireless earphones", "cordless headphones"),
        ("listen to music at the gym", "block noise on the commute", "take calls while walking"),
        ("Active noise cancellation.", "Charging case adds 24 hours of playback.", "Sweat-resistant IPX4 rating.",
         "Low-latency gaming mode."),
        ("ABS polymer", "silicone"),
        _sizes("standard fit", "regular", "sport fit with ear hooks", "sport", "small fit", "small ears"),
        ("speaker", "power_bank")),
    ProductType(
        "power_bank", "electronics", ("portable charger", "power bank", "battery pack"),
        ("phone battery", "external battery", "charging brick"),
        ("charge my phone while traveling", "keep my phone alive at a festival"),
        ("Charges a phone twice on one fill.", "USB-C power delivery in and out.", "Pass-through charging.",
         "LED charge indicator."),
        ("aluminum", "ABS polymer"), _sizes("5,000 mAh", "small", "10,000 mAh", "medium", "20,000 mAh", "large"),
        ("usb_charger", "earbuds")),
    ProductType(
        "speaker", "electronics", ("portable speaker", "bluetooth speaker", "wireless speaker"),
        ("music box", "boombox", "party speaker"),
        ("play music at the beach", "listen to music in the shower", "have sound for a pool party"),
        ("360-degree sound with a passive bass radiator.", "Floats and survives a dunk in water.",
         "Pair two units for stereo.", "12-hour battery."),
        ("silicone", "aluminum", "recycled polyester"), _sizes("mini", "small", "mid-size", "medium", "large", "big"),
        ("earbuds", "power_bank")),
    ProductType(
        "usb_charger", "electronics", ("GaN wall charger", "USB-C charger", "fast charging adapter"),
        ("phone plug", "laptop charger block", "charging plug"),
        ("charge a laptop and a phone from one outlet", "fast charge a phone"),
        ("Splits output across two ports.", "Foldable prongs for travel.", "Gallium nitride runs cool.",
         "Universal voltage for travel abroad."),
        ("ABS polymer",), _sizes("30 W", "small", "65 W", "medium", "100 W", "powerful"),
        ("power_bank", "laptop_sleeve")),
    ProductType(
        "webcam", "electronics", ("HD webcam", "USB webcam", "streaming camera"),
        ("computer camera", "video call cam", "zoom camera"),
        ("look better on video calls", "stream games online", "teach online classes"),
        ("Smooth video at 60 frames per second.", "Dual noise-reducing microphones.", "Privacy shutter.",
         "Automatic light correction."),
        ("ABS polymer", "aluminum"), _sizes("720p", "basic", "1080p", "full hd", "4K", "4k"),
        ("desk_lamp", "monitor_stand")),
    ProductType(
        "keyboard", "electronics", ("mechanical keyboard", "tenkeyless keyboard", "hot-swappable keyboard"),
        ("clicky keyboard", "gaming keyboard", "typing keyboard"),
        ("type all day without tired fingers", "get faster inputs in games"),
        ("Tactile brown switches.", "Per-key RGB backlight.", "PBT double-shot keycaps.",
         "Detachable braided cable."),
        ("aluminum", "ABS polymer"),
        _sizes("60% layout", "compact", "tenkeyless layout", "medium", "full-size", "numpad"),
        ("monitor_stand", "office_chair")),
    # kitchen
    ProductType(
        "chef_knife", "kitchen", ("chef's knife", "gyuto", "kitchen knife"),
        ("cooking knife", "sharp knife", "knife for chopping"),
        ("chop vegetables fast", "slice meat thin", "dice onions"),
        ("Hand-sharpened 15-degree edge.", "Full tang with a riveted handle.",
         "Hammered finish keeps food from sticking.", "Balanced weight for rocking cuts."),
        ("high-carbon steel", "Damascus steel", "ceramic"),
        _sizes("6-inch blade", "small", "8-inch blade", "medium", "10-inch blade", "large"), ("cutting_board",)),
    ProductType(
        "skillet", "kitchen", ("cast iron skillet", "frying pan", "pre-seasoned pan"),
        ("frypan", "steak pan", "egg pan"),
        ("sear a steak at home", "bake cornbread", "cook eggs for breakfast"),
        ("Pre-seasoned with vegetable oil.", "Goes from stovetop to oven.", "Holds heat evenly.",
         "Helper handle for lifting."),
        ("cast iron", "enameled cast iron", "stainless steel"),
        _sizes("8-inch", "small", "10-inch", "medium", "12-inch", "large"), ("chef_knife",)),
    ProductType(
        "french_press", "kitchen", ("French press", "coffee plunger", "cafetière"),
        ("coffee maker", "press pot", "plunger coffee"),
        ("make coffee without a machine", "brew coffee while camping", "make cold brew at home"),
        ("Four-level filtration keeps grounds out.", "Heat-resistant beaker.", "Makes up to 8 cups.",
         "Insulated walls keep the brew warm."),
        ("borosilicate glass", "stainless steel", "BPA-free Tritan"), VOLUME_SIZES, ("kettle", "vacuum_flask")),
    ProductType(
        "blender", "kitchen", ("countertop blender", "high-speed blender", "personal blender"),
        ("smoothie maker", "mixer", "smoothie machine"),
        ("make smoothies every morning", "crush ice for cocktails", "puree baby food"),
        ("1200 W motor.", "Six stainless blades.", "Tamper included.", "Pulse button and preset programs."),
        ("BPA-free Tritan", "borosilicate glass", "stainless steel"),
        _sizes("600 ml", "small", "1.5 liter", "medium", "2 liter", "large"), ("food_containers",)),
    ProductType(
        "kettle", "kitchen", ("electric kettle", "gooseneck kettle", "cordless kettle"),
        ("water boiler", "tea kettle", "hot water pot"),
        ("boil water for tea", "make pour over coffee", "make instant noodles at the office"),
        ("Variable temperature presets.", "Auto shut-off and boil-dry protection.", "Boils in under four minutes.",
         "Keep-warm mode."),
        ("stainless steel", "borosilicate glass", "BPA-free Tritan"),
        _sizes("0.8 liter", "small", "1.2 liter", "medium", "1.7 liter", "large"), ("french_press",)),
    ProductType(
        "cutting_board", "kitchen", ("cutting board", "chopping block", "butcher block"),
        ("chopping board", "kitchen board", "cheese board"),
        ("chop vegetables without dulling knives", "serve cheese and charcuterie"),
        ("Juice groove catches liquids.", "Non-slip feet.", "End-grain construction.", "Reversible design."),
        ("walnut", "bamboo", "BPA-free Tritan"),
        _sizes("small", "small", "medium", "medium", "extra large", "large"), ("chef_knife",)),
    ProductType(
        "food_containers", "kitchen", ("food storage containers", "meal prep containers", "airtight containers"),
        ("tupperware", "lunch boxes", "leftover boxes"),
        ("pack lunch for work", "store leftovers", "meal prep for the week"),
        ("Snap-lock lids seal airtight.", "Microwave, freezer and dishwasher safe.", "Stackable nesting design.",
         "Measurement marks on the side."),
        ("borosilicate glass", "BPA-free Tritan", "stainless steel"),
        _sizes("set of 5", "small", "set of 10", "medium", "set of 24", "large"), ("blender",)),
    # apparel
    ProductType(
        "rain_jacket", "apparel", ("waterproof shell jacket", "rain jacket", "hardshell"),
        ("raincoat", "windbreaker", "waterproof coat"),
        ("stay dry walking the dog", "hike in the rain", "bike to work in showers"),
        ("3-layer waterproof breathable membrane.", "Fully taped seams.", "Helmet-compatible hood.",
         "Pit zips for venting."),
        ("recycled polyester", "ripstop nylon"), APPAREL_SIZES, ("fleece", "daypack")),
    ProductType(
        "fleece", "apparel", ("fleece pullover", "quarter-zip fleece", "fleece jacket"),
        ("warm sweater", "jumper", "cozy top"),
        ("layer up on cold mornings", "stay warm around the campfire"),
        ("Brushed interior traps warmth.", "Stand-up collar blocks wind.", "Zip chest pocket.",
         "Stretch cuffs and hem."),
        ("recycled polyester", "sherpa fleece", "merino wool"), APPAREL_SIZES, ("rain_jacket", "beanie")),
    ProductType(
        "running_shoes", "apparel", ("running shoes", "road runners", "trail running shoes"),
        ("sneakers", "trainers", "jogging shoes"),
        ("train for a marathon", "jog on pavement", "run on muddy trails"),
        ("Responsive foam midsole.", "8 mm heel-to-toe drop.", "Grippy rubber outsole.", "Padded heel collar."),
        ("engineered mesh", "recycled polyester"),
        _sizes("narrow fit", "narrow", "standard width", "regular", "wide fit", "wide"), ("wool_socks", "leggings")),
    ProductType(
        "wool_socks", "apparel", ("merino hiking socks", "wool socks", "crew socks"),
        ("warm socks", "thick socks", "boot socks"),
        ("keep my feet warm in winter", "prevent blisters on long hikes"),
        ("Cushioned heel and toe.", "Seamless toe closure.", "Arch band keeps them in place.",
         "Naturally odor resistant."),
        ("merino wool", "organic cotton"), APPAREL_SIZES, ("running_shoes", "beanie")),
    ProductType(
        "beanie", "apparel", ("knit beanie", "watch cap", "cuffed toque"),
        ("winter hat", "woolly hat", "warm cap"),
        ("keep my ears warm", "stay warm on a ski trip"),
        ("Ribbed knit with a fold-up cuff.", "Soft lining does not itch.", "One size stretches to fit.",
         "Reflective label for dark evenings."),
        ("merino wool", "organic cotton", "recycled polyester"),
        _sizes("kids", "for kids", "standard", "regular", "slouchy", "oversized"), ("fleece", "wool_socks")),
    ProductType(
        "leggings", "apparel", ("performance leggings", "high-rise tights", "athletic leggings"),
        ("yoga pants", "gym tights", "workout pants"),
        ("do yoga comfortably", "squat without see-through fabric"),
        ("Four-way stretch.", "Hidden waistband pocket.", "Squat-proof opaque knit.", "Flat seams prevent chafing."),
        ("recycled polyester", "organic cotton"), APPAREL_SIZES, ("yoga_mat", "running_shoes")),
    # home
    ProductType(
        "duvet", "home", ("down alternative comforter", "duvet insert", "all-season quilt"),
        ("blanket for bed", "doona", "bed cover"),
        ("sleep warm in winter", "stop overheating at night"),
        ("Baffle-box stitching keeps the fill even.", "Corner loops hold the cover in place.",
         "Breathable percale shell.", "Hypoallergenic fill."),
        ("goose down", "synthetic insulation", "organic cotton"),
        _sizes("twin", "single", "queen", "double", "king", "king size"), ("pillow", "throw_blanket")),
    ProductType(
        "desk_lamp", "home", ("LED desk lamp", "task lamp", "architect lamp"),
        ("reading light", "study lamp", "table light"),
        ("read at night without eye strain", "light up my workbench"),
        ("Five color temperatures and dimming.", "Flicker-free light.", "Swing arm reaches across the desk.",
         "USB port charges your phone."),
        ("aluminum", "ABS polymer", "walnut"), _sizes("clip-on", "small", "desk", "standard", "floor", "tall"),
        ("webcam", "monitor_stand")),
    ProductType(
        "air_purifier", "home", ("HEPA air purifier", "air cleaner", "room purifier"),
        ("air filter machine", "allergy machine", "smoke remover"),
        ("get rid of pet dander", "reduce wildfire smoke indoors", "help with allergies in the bedroom"),
        ("True HEPA filter captures 99.97% of particles.", "Activated carbon layer absorbs odors.",
         "Whisper-quiet sleep mode.", "Filter change reminder."),
        ("ABS polymer", "aluminum"),
        _sizes("up to 200 sq ft", "small room", "up to 500 sq ft", "bedroom", "up to 1000 sq ft", "large room"),
        ("pet_bed",)),
    ProductType(
        "curtains", "home", ("blackout curtains", "thermal drapes", "room-darkening panels"),
        ("dark curtains", "window covers", "light blocking drapes"),
        ("sleep during the day after night shifts", "keep the nursery dark"),
        ("Triple-weave fabric blocks light.", "Grommet top slides on any rod.", "Insulates against drafts.",
         "Sold as a pair of panels."),
        ("recycled polyester", "organic cotton"),
        _sizes("63 inch", "short", "84 inch", "standard", "108 inch", "long"), ("duvet",)),
    ProductType(
        "pillow", "home", ("memory foam pillow", "contour pillow", "cervical pillow"),
        ("neck pillow", "orthopedic pillow", "pillow for neck pain"),
        ("wake up without a stiff neck", "support my head as a side sleeper"),
        ("Contoured shape cradles the neck.", "Removable bamboo cover.", "Adjustable loft.",
         "Cooling gel layer."),
        ("bamboo", "organic cotton", "synthetic insulation"),
        _sizes("standard", "standard", "queen", "queen", "king", "king"), ("duvet",)),
    ProductType(
        "throw_blanket", "home", ("throw blanket", "knit throw", "sherpa throw"),
        ("couch blanket", "sofa blanket", "cozy blanket"),
        ("snuggle on the couch", "have a movie night under a blanket"),
        ("Reversible with a plush side.", "Fringed edges.", "Does not shed.", "Drapes over any sofa."),
        ("sherpa fleece", "organic cotton", "merino wool"),
        _sizes("50 x 60 inch", "small", "60 x 80 inch", "large", "90 x 90 inch", "oversized"), ("duvet",)),
    # fitness
    ProductType(
        "yoga_mat", "fitness", ("yoga mat", "exercise mat", "pilates mat"),
        ("workout mat", "floor mat for exercise", "stretching mat"),
        ("practice yoga at home", "do floor exercises on hardwood"),
        ("Grippy surface even when sweaty.", "Alignment lines printed on top.", "Carry strap included.",
         "Cushions knees and wrists."),
        ("natural rubber", "cork", "TPE"), _sizes("3 mm", "thin", "6 mm", "standard", "10 mm", "thick"),
        ("foam_roller", "resistance_bands", "leggings")),
    ProductType(
        "dumbbells", "fitness", ("adjustable dumbbells", "hex dumbbells", "dumbbell set"),
        ("hand weights", "free weights", "weights for home gym"),
        ("build muscle at home", "do strength training without a gym"),
        ("Dial selects the weight in seconds.", "Knurled handles.", "Hex heads do not roll away.",
         "Storage tray included."),
        ("cast iron", "natural rubber", "stainless steel"),
        _sizes("up to 10 lb", "light", "up to 25 lb", "medium", "up to 50 lb", "heavy"),
        ("resistance_bands", "yoga_mat")),
    ProductType(
        "resistance_bands", "fitness", ("resistance bands", "loop bands", "tube bands"),
        ("stretch bands", "exercise bands", "workout elastics"),
        ("rehab a shoulder injury", "do glute workouts while traveling"),
        ("Five resistance levels.", "Door anchor and handles included.", "Snap-resistant layered latex.",
         "Exercise guide included."),
        ("natural rubber", "TPE"), _sizes("light", "light", "medium", "medium", "heavy", "heavy"),
        ("dumbbells", "yoga_mat")),
    ProductType(
        "foam_roller", "fitness", ("foam roller", "massage roller", "textured roller"),
        ("muscle roller", "back roller", "massage tube"),
        ("relieve sore muscles after running", "loosen a tight back"),
        ("Textured grid reaches deep tissue.", "Hollow core keeps its shape.", "Firm density for recovery.",
         "Instructional videos included."),
        ("closed-cell foam", "TPE"), _sizes("12 inch", "short", "18 inch", "medium", "36 inch", "long"),
        ("yoga_mat",)),
    ProductType(
        "jump_rope", "fitness", ("speed jump rope", "skipping rope", "weighted jump rope"),
        ("jumping rope", "boxing rope", "cardio rope"),
        ("do cardio in a small apartment", "train like a boxer"),
        ("Ball-bearing handles spin smoothly.", "Adjustable cable length.", "Tangle-free coated cable.",
         "Comfortable foam grips."),
        ("aluminum", "ABS polymer", "silicone"), _sizes("9 ft", "short", "10 ft", "standard", "11 ft", "long"),
        ("water_bottle",)),
    ProductType(
        "water_bottle", "fitness", ("sports water bottle", "reusable bottle", "squeeze bottle"),
        ("gym bottle", "drink bottle", "hydration bottle"),
        ("drink more water during workouts", "stay hydrated at the gym"),
        ("Leakproof flip-top spout.", "One-handed drinking.", "Carry loop on the lid.",
         "Time markers remind you to sip."),
        ("BPA-free Tritan", "stainless steel", "silicone"), VOLUME_SIZES, ("vacuum_flask", "daypack")),
    # office
    ProductType(
        "office_chair", "office", ("ergonomic office chair", "mesh task chair", "executive chair"),
        ("desk chair", "computer chair", "chair for back pain"),
        ("sit at a desk all day without back pain", "work from home comfortably"),
        ("Adjustable lumbar support.", "4D armrests.", "Synchro tilt with lock.", "Breathable back."),
        ("engineered mesh", "full-grain leather"),
        _sizes("petite", "small", "standard", "regular", "big and tall", "big"), ("monitor_stand", "keyboard")),
    ProductType(
        "monitor_stand", "office", ("monitor riser", "monitor arm", "screen stand"),
        ("computer stand", "screen lift", "display holder"),
        ("raise my screen to eye level", "free up space on my desk"),
        ("Gas spring holds screens up to 9 kg.", "VESA 75 and 100 mounts.", "Cable management clips.",
         "Storage drawer underneath."),
        ("aluminum", "bamboo", "walnut"), _sizes("single", "single", "dual", "double", "triple", "three screens"),
        ("keyboard", "office_chair", "webcam")),
    ProductType(
        "fountain_pen", "office", ("fountain pen", "converter pen", "calligraphy pen"),
        ("ink pen", "nice pen", "writing pen gift"),
        ("improve my handwriting", "give a gift to a writer"),
        ("Smooth steel nib.", "Refillable converter and cartridges.", "Screw cap seals the nib.",
         "Balanced for long writing sessions."),
        ("stainless steel", "ABS polymer", "carbon fiber"),
        _sizes("fine nib", "fine", "medium nib", "medium", "broad nib", "bold"), ("notebook",)),
    ProductType(
        "notebook", "office", ("dot grid notebook", "hardcover journal", "ruled notebook"),
        ("diary", "bullet journal", "notepad"),
        ("plan my week", "take notes in meetings", "sketch ideas"),
        ("Thick paper with no ink bleed.", "Lay-flat binding.", "Numbered pages and index.",
         "Elastic closure and ribbon marker."),
        ("full-grain leather", "recycled polyester", "organic cotton"),
        _sizes("A6 pocket", "pocket", "A5", "medium", "A4", "large"), ("fountain_pen",)),
    # pets
    ProductType(
        "dog_leash", "pets", ("dog leash", "training lead", "retractable leash"),
        ("dog rope", "walking strap for dog", "puppy lead"),
        ("walk a dog that pulls", "train a new puppy"),
        ("Padded handle.", "Reflective stitching.", "Swivel clip stops tangles.", "Traffic handle near the clip."),
        ("nylon webbing", "full-grain leather"), _sizes("4 ft", "short", "6 ft", "standard", "16 ft", "long"),
        ("chew_toy", "pet_bed")),
    ProductType(
        "pet_bed", "pets", ("orthopedic pet bed", "dog bed", "donut cat bed"),
        ("dog cushion", "pet mattress", "cat nest"),
        ("give an old dog joint support", "make a cozy spot for the cat"),
        ("Raised bolsters support the head.", "Removable washable cover.", "Non-skid bottom.",
         "Egg-crate foam base."),
        ("sherpa fleece", "recycled polyester", "cotton canvas"),
        _sizes("small", "small dog", "medium", "medium dog", "large", "big dog"), ("dog_leash", "litter_box")),
    ProductType(
        "litter_box", "pets", ("litter box", "hooded litter pan", "self-cleaning litter box"),
        ("cat toilet", "kitty potty", "cat tray"),
        ("stop litter tracking around the house", "control cat odor"),
        ("Carbon filter in the hood.", "High sides prevent spills.", "Swing door for privacy.",
         "Scoop included."),
        ("ABS polymer", "stainless steel"), _sizes("compact", "small", "standard", "regular", "jumbo", "large"),
        ("pet_bed",)),
    ProductType(
        "chew_toy", "pets", ("chew toy", "rubber bone", "treat-dispensing toy"),
        ("dog toy", "puppy chew", "tough toy for dogs"),
        ("keep a dog busy while I work", "stop a puppy chewing furniture"),
        ("Nearly indestructible.", "Fill with treats or peanut butter.", "Bounces unpredictably.",
         "Floats in water."),
        ("natural rubber", "nylon webbing"), _sizes("small", "small dog", "medium", "medium dog", "large", "big dog"),
        ("dog_leash",)),
)


QUERY_STYLES = ("listing", "shopper", "need")


@dataclass
class CatalogConfig:
    """Sizes and query mix of the generated catalog (params.yaml: dataset.catalog)."""

    n_items: int = 5000
    n_train_queries: int = 400
    n_test_queries: int = 200
    # Shares of query phrasings: the listing's own words, shopper wording, a described need.
    query_style_weights: dict[str, float] = field(
        default_factory=lambda: {"listing": 0.2, "shopper": 0.4, "need": 0.4})
    # Share of queries that also ask for a color, material or size.
    attribute_query_share: float = 0.5
    # Draws per wanted query before giving up on finding enough distinct query texts.
    max_query_draws_per_query: int = 50

    def __post_init__(self) -> None:
        for name in ("n_items", "n_train_queries", "n_test_queries", "max_query_draws_per_query"):
            if getattr(self, name) < 1:
                raise ValueError(f"dataset.catalog.{name} must be >= 1, got {getattr(self, name)}")
        weights = self.query_style_weights
        unknown = sorted(set(weights) - set(QUERY_STYLES))
        if unknown or not weights or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(f"dataset.catalog.query_style_weights must weight {QUERY_STYLES} (non-negative, "
                             f"not all zero), got {weights}")
        if not 0 <= self.attribute_query_share <= 1:
            raise ValueError(
                f"dataset.catalog.attribute_query_share must lie in [0, 1], got {self.attribute_query_share}")



@dataclass(frozen=True)
class Catalog:
    """The generated dataset, ready for `clickloop.beir.write_beir`."""

    documents: list[Document]
    queries: dict[str, str]
    qrels: dict[str, Qrels]  # split -> qrels

    @property
    def splits(self) -> list[str]:
        return list(self.qrels)


@dataclass(frozen=True)
class _Items:
    """Item attributes as parallel arrays (type index, category index, and one index per attribute kind)."""

    product_type: np.ndarray
    category: np.ndarray
    attributes: dict[str, np.ndarray]


@dataclass(frozen=True)
class _Intent:
    """What a query asks for: a product type, and maybe one attribute value."""

    product_type: int
    attribute_kind: str | None
    attribute_value: int


def _attribute_options(ptype: ProductType, kind: str) -> list[tuple[str, tuple[str, ...]]]:
    """(listing wording, shopper wordings) of each value of an attribute kind for a product type."""
    if kind == "color":
        return list(COLORS.items())
    if kind == "material":
        return [(m, MATERIALS[m]) for m in ptype.materials]
    return [(listing, (shopper,)) for listing, shopper in ptype.sizes]


def _check_product_types() -> None:
    keys = {p.key for p in PRODUCT_TYPES}
    for p in PRODUCT_TYPES:
        bad = [r for r in p.related if r not in keys] + [m for m in p.materials if m not in MATERIALS]
        if bad or p.category not in CATEGORY_BLURBS:
            raise ValueError(f"product type {p.key}: unknown related types, materials or category {bad}")


def generate_catalog(config: CatalogConfig, seed: int, train_split: str = "train",
                     test_split: str = "test") -> Catalog:
    """The embedded dataset for `seed`: listings, shopper queries split into train/test, graded qrels."""
    _check_product_types()
    rng = np.random.default_rng(seed)
    items = _draw_items(config.n_items, rng)
    documents = [_listing(i, items, rng) for i in range(config.n_items)]
    texts, intents = _draw_queries(config, rng)
    split_of = np.array([train_split] * config.n_train_queries + [test_split] * config.n_test_queries)
    split_of = split_of[rng.permutation(len(split_of))]
    queries: dict[str, str] = {}
    qrels: dict[str, Qrels] = {train_split: {}, test_split: {}}
    for number, (text, intent, split) in enumerate(zip(texts, intents, split_of, strict=True)):
        qid = f"q{number:04d}"
        queries[qid] = text
        grades = _grades(intent, items)
        judged = np.flatnonzero(grades)
        qrels[str(split)][qid] = {documents[i].doc_id: int(grades[i]) for i in judged}
    return Catalog(documents, queries, qrels)


def _draw_items(n_items: int, rng: np.random.Generator) -> _Items:
    # Uneven type popularity, like a real shop: Dirichlet weights around the uniform.
    type_weights = rng.dirichlet(np.full(len(PRODUCT_TYPES), 8.0))
    product_type = rng.choice(len(PRODUCT_TYPES), size=n_items, p=type_weights)
    categories = list(CATEGORY_BLURBS)
    category = np.array([categories.index(PRODUCT_TYPES[t].category) for t in product_type])
    attributes = {}
    for kind in ATTRIBUTE_KINDS:
        n_options = np.array([len(_attribute_options(PRODUCT_TYPES[t], kind)) for t in product_type])
        attributes[kind] = np.floor(rng.random(n_items) * n_options).astype(np.int64)
    return _Items(product_type, category, attributes)


def _pick(options: tuple[str, ...] | list[str], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def _title_case(text: str) -> str:
    """Capitalize each word's first letter and keep the rest ("LED", "GaN", "chef's" stay intact)."""
    return " ".join(word[:1].upper() + word[1:] for word in text.split())


def _listing(i: int, items: _Items, rng: np.random.Generator) -> Document:
    ptype = PRODUCT_TYPES[items.product_type[i]]
    values = {kind: _attribute_options(ptype, kind)[items.attributes[kind][i]][0] for kind in ATTRIBUTE_KINDS}
    brand = _pick(BRAND_PARTS[0], rng) + _pick(BRAND_PARTS[1], rng)
    model = f"{_pick(MODEL_WORDS, rng)} {int(rng.integers(1, 10))}"
    name = _pick(ptype.names, rng)
    title = _pick(TITLE_TEMPLATES, rng).format(
        brand=brand, name=_title_case(name) if rng.random() < 0.5 else name, material=values["material"],
        size=values["size"], color=_title_case(values["color"]), model=model)
    n_features = int(rng.integers(2, len(ptype.features) + 1))
    sentences = [ptype.features[j] for j in rng.choice(len(ptype.features), n_features, replace=False)]
    sentences += [
        _pick((f"Made of {values['material']}.", f"{values['material'].capitalize()} construction.",
               f"Crafted from durable {values['material']}."), rng),
        _pick((f"Color: {values['color']}.", f"Finished in {values['color']}.", f"Shown in {values['color']}."), rng),
        _pick((f"Size: {values['size']}.", f"Available here in {values['size']}."), rng),
        _pick(CATEGORY_BLURBS[ptype.category], rng),
        _pick(GENERIC_SENTENCES, rng).format(
            years=int(rng.integers(1, 6)), rating=f"{rng.uniform(3.6, 5.0):.1f}", city=_pick(CITIES, rng),
            model=f"{brand[:3].upper()}-{int(rng.integers(100, 1000))}"),
    ]
    if rng.random() < 0.5:  # some sellers also use a second name for the product
        sentences.append(f"Also sold as: {_pick([n for n in ptype.names if n != name] or [name], rng)}.")
    order = rng.permutation(len(sentences))
    return Document(f"p{i:05d}", title, " ".join(sentences[j] for j in order))


def _draw_queries(config: CatalogConfig, rng: np.random.Generator) -> tuple[list[str], list[_Intent]]:
    """Distinct query texts with the intent each expresses."""
    wanted = config.n_train_queries + config.n_test_queries
    styles = [s for s in QUERY_STYLES if config.query_style_weights.get(s, 0) > 0]
    style_p = np.array([config.query_style_weights[s] for s in styles])
    style_p /= style_p.sum()
    texts: dict[str, _Intent] = {}
    for _ in range(wanted * config.max_query_draws_per_query):
        if len(texts) == wanted:
            break
        t = int(rng.integers(len(PRODUCT_TYPES)))
        ptype = PRODUCT_TYPES[t]
        kind = _pick(ATTRIBUTE_KINDS, rng) if rng.random() < config.attribute_query_share else None
        value = int(rng.integers(len(_attribute_options(ptype, kind)))) if kind else 0
        style = styles[int(rng.choice(len(styles), p=style_p))]
        text = _query_text(ptype, style, kind, value, rng)
        texts.setdefault(text, _Intent(t, kind, value))
    if len(texts) < wanted:
        raise ValueError(f"could draw only {len(texts)} distinct queries of the {wanted} asked for; "
                         "lower dataset.catalog.n_train_queries / n_test_queries")
    return list(texts), list(texts.values())


def _query_text(ptype: ProductType, style: str, kind: str | None, value: int, rng: np.random.Generator) -> str:
    if kind is None:
        attr = ""
    else:
        listing, shopper = _attribute_options(ptype, kind)[value]
        attr = listing if style == "listing" else _pick(shopper, rng)
    if style == "need":
        templates = NEED_WITH_ATTRIBUTE_TEMPLATES if attr else NEED_TEMPLATES
        return _pick(templates, rng).format(need=_pick(ptype.needs, rng), attr=attr).lower()
    term = _pick(ptype.names if style == "listing" else ptype.shopper_terms, rng)
    if not attr:
        return term.lower()
    templates = LISTING_WITH_ATTRIBUTE_TEMPLATES if style == "listing" else SHOPPER_WITH_ATTRIBUTE_TEMPLATES
    return _pick(templates, rng).format(attr=attr, term=term).lower()


def _grades(intent: _Intent, items: _Items) -> np.ndarray:
    """Hidden relevance 0-4 of every item to a query of this intent."""
    ptype = PRODUCT_TYPES[intent.product_type]
    same_type = items.product_type == intent.product_type
    exact = same_type
    if intent.attribute_kind is not None:
        exact = same_type & (items.attributes[intent.attribute_kind] == intent.attribute_value)
    related_types = [i for i, p in enumerate(PRODUCT_TYPES) if p.key in ptype.related]
    category = list(CATEGORY_BLURBS).index(ptype.category)
    return np.select(
        [exact, same_type, np.isin(items.product_type, related_types), items.category == category],
        [4, 3, 2, 1], default=0,
    )
