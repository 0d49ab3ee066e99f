"""The text of the synthetic corpus: a seeded grammar of English sentences in two domains.

"general" (everyday life) and "clinical" (medication, investigations and ward talk), so a model tuned
on one can be evaluated on the other. Numbers are spelled out as words, as people say them.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

MIN_WORDS, MAX_WORDS = 5, 16

Slot = Sequence[str] | Callable[[random.Random], str]

# ---------------------------------------------------------------------------------------------
# Numbers as words
# ---------------------------------------------------------------------------------------------

def _words(text: str) -> list[str]:
    return text.split()


_ONES = _words(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
    )
_TENS = _words("_ _ twenty thirty forty fifty sixty seventy eighty ninety")


def number_words(n: int) -> str:
    """Spell a whole number from 0 to 999,999 in British English ("one hundred and five")."""
    if not 0 <= n < 1_000_000:
        raise ValueError(f"number_words: {n} is outside 0..999999")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" and {number_words(rest)}" if rest else "")
    thousands, rest = divmod(n, 1000)
    head = f"{number_words(thousands)} thousand"
    if not rest:
        return head
    return head + (f" and {number_words(rest)}" if rest < 100 else f" {number_words(rest)}")


def _num(lo: int, hi: int, step: int = 1) -> Callable[[random.Random], str]:
    return lambda rng: number_words(rng.randrange(lo, hi + 1, step))


def _clock(rng: random.Random) -> str:
    hour = number_words(rng.randint(1, 12))
    form = rng.randrange(7)
    if form == 0:
        return f"half past {hour}"
    if form == 1:
        return f"quarter past {hour}"
    if form == 2:
        return f"quarter to {hour}"
    if form == 3:
        return f"{hour} {rng.choice(['fifteen', 'thirty', 'forty five', 'twenty', 'ten'])}"
    if form == 4:
        return f"{hour} in the {rng.choice(['morning', 'evening', 'afternoon'])}"
    if form == 5:
        return f"{rng.choice(['ten', 'twenty', 'five'])} past {hour}"
    return rng.choice(["noon", "midnight", "lunchtime", f"{hour} sharp"])


def _price(rng: random.Random) -> str:
    amount = number_words(rng.choice([2, 3, 4, 5, 6, 8, 10, 12, 15, 18, 20, 25, 30, 40, 45, 60, 80, 99]))
    currency = rng.choice(["pounds", "dollars", "euros"])
    return f"{amount} {currency}" + rng.choice(["", "", " fifty", " ninety nine"])


def _dose(rng: random.Random) -> str:
    amount = rng.choice([1, 2, 5, 10, 20, 25, 40, 50, 75, 80, 100, 150, 200, 250, 400, 500, 750, 1000])
    unit = "milligram" if amount == 1 else "milligrams"
    if rng.random() < 0.1:
        unit = "micrograms"
    return f"{number_words(amount)} {unit}"


def _tablets(rng: random.Random) -> str:
    count = rng.randint(1, 4)
    return "one tablet" if count == 1 else f"{number_words(count)} tablets"


def _blood_pressure(rng: random.Random) -> str:
    return f"{number_words(rng.randrange(90, 191, 5))} over {number_words(rng.randrange(50, 111, 5))}"


def _temperature_c(rng: random.Random) -> str:
    whole = rng.randint(35, 40)
    tenth = rng.randint(0, 9)
    return f"{number_words(whole)} point {number_words(tenth)} degrees"


# ---------------------------------------------------------------------------------------------
# The "general" domain: everyday life
# ---------------------------------------------------------------------------------------------

_GENERAL_SLOTS: dict[str, Slot] = {
    "name": _words(
        "emma james olivia daniel sophie michael hannah thomas grace peter lucy samuel chloe robert "
        "alice david maria george rachel simon laura oliver ruth henry julia nathan clara patrick helen "
        "adam isabel martin fiona kevin naomi owen"
    ),
    "relative": _words(
        "mother father sister brother aunt uncle grandmother grandfather cousin niece nephew son "
        "daughter wife husband"
    ),
    "person": [
        "my {relative}", "our {relative}", "{name}", "{name}", "{name}", "my friend {name}",
        "the neighbour", "our neighbour", "a colleague of mine", "my flatmate", "the teacher",
        "my boss", "{name} from work",
    ],
    "day": _words("monday tuesday wednesday thursday friday saturday sunday"),
    "month": _words(
        "january february march april may june july august september october november december"
    ),
    "season": ["spring", "summer", "autumn", "winter"],
    "period": ["week", "month", "year", "weekend", "term"],
    "future_time": [
        "tomorrow", "tomorrow morning", "tomorrow afternoon", "this evening", "tonight", "next week",
        "on {day}", "on {day} afternoon", "next {day}", "at the weekend", "later today", "in {month}",
        "this {season}", "after lunch",
    ],
    "past_time": [
        "yesterday", "last night", "last week", "on {day}", "last {day}", "this morning",
        "{small_num} days ago", "a few weeks ago", "in {month}", "last {season}", "over the weekend",
    ],
    "small_num": _num(2, 12),
    "minutes": _num(5, 55, 5),
    "age": _num(3, 95),
    "temp": _num(2, 35),
    "clock": _clock,
    "price": _price,
    "weather_adj": _words(
        "sunny cloudy windy rainy foggy chilly mild warm humid freezing stormy bright grey damp"
    ),
    "weather_noun": [
        "heavy rain", "light showers", "thick fog", "strong winds", "a thunderstorm", "snow",
        "sleet", "a hard frost", "sunshine", "drizzle", "hail",
    ],
    "weather_verb": ["rain", "snow", "pour down", "turn cold", "get windy", "drizzle", "clear up"],
    "city": _words(
        "london paris madrid rome berlin dublin edinburgh vienna lisbon amsterdam prague oslo boston "
        "chicago toronto sydney glasgow manchester bristol brussels"
    ),
    "vehicle": ["train", "bus", "coach", "ferry", "flight", "night train", "tram", "boat"],
    "landmark": [
        "station", "cathedral", "town hall", "harbour", "old bridge", "market square", "park",
        "library", "castle", "museum", "river", "hospital", "post office",
    ],
    "travel_item": [
        "boarding pass", "suitcase", "travel adapter", "tickets", "hotel booking", "rucksack",
        "sunglasses", "phone charger", "map", "guidebook",
    ],
    "shop": [
        "bakery", "chemist", "supermarket", "butcher", "bookshop", "hardware shop", "greengrocer",
        "corner shop", "florist", "garden centre", "shoe shop",
    ],
    "grocery": [
        "milk", "bread", "butter", "eggs", "cheese", "apples", "onions", "potatoes", "rice", "pasta",
        "coffee", "tea bags", "orange juice", "tomatoes", "bananas", "yoghurt", "flour", "sugar",
        "carrots", "washing up liquid", "olive oil", "cereal",
    ],
    "plural_thing": [
        "winter coats", "garden chairs", "board games", "running shoes", "kitchen knives", "lamps",
        "umbrellas", "picture frames", "school bags", "blankets", "plant pots", "towels",
    ],
    "clothing": [
        "jumper", "jacket", "shirt", "pair of jeans", "scarf", "dress", "pair of boots", "coat",
        "raincoat", "pair of gloves",
    ],
    "size_adj": ["small", "big", "tight", "loose", "long", "short"],
    "colour": _words("blue green yellow white red grey cream orange purple"),
    "chore": [
        "take out the rubbish", "water the plants", "feed the cat", "hang up the washing",
        "empty the dishwasher", "tidy your room", "walk the dog", "set the table",
        "lock the back door", "close the windows", "turn off the heating", "pick up the children",
        "put the shopping away", "wash the car",
    ],
    "event": [
        "dinner", "the guests arrive", "we leave", "the film starts", "it gets dark", "the weekend",
        "your grandmother visits", "the shops close", "bedtime", "the party",
    ],
    "appliance": [
        "washing machine", "fridge", "oven", "kettle", "toaster", "boiler", "dishwasher",
        "vacuum cleaner", "television", "printer", "doorbell",
    ],
    "personal_item": [
        "keys", "glasses", "wallet", "phone", "umbrella", "gloves", "bag", "headphones", "watch",
        "notebook",
    ],
    "furniture": [
        "kitchen table", "sofa", "bed", "shelf by the door", "desk", "bench in the hall",
        "chair in the garden", "windowsill",
    ],
    "room": ["kitchen", "living room", "bedroom", "bathroom", "hallway", "spare room", "study"],
    "dish": [
        "soup", "curry", "lasagne", "roast chicken", "vegetable pie", "fish stew", "pancakes",
        "apple crumble", "salad", "risotto", "chocolate cake", "omelette", "bean chilli",
    ],
    "seasoning": ["salt", "pepper", "lemon juice", "garlic", "fresh basil", "chilli", "honey", "butter"],
    "cuisine": _words("italian indian thai greek mexican japanese turkish lebanese chinese spanish"),
    "drink": ["red wine", "water", "lemonade", "apple juice", "sparkling water", "beer", "milk"],
    "hobby": [
        "play the piano", "swim", "ride a bike", "speak spanish", "bake bread", "paint", "knit",
        "play chess", "dance", "play the guitar", "climb", "sail",
    ],
    "kid_place": ["park", "swimming pool", "playground", "beach", "zoo", "cinema", "library", "farm"],
    "workplace": ["bank", "library", "school", "bakery", "council", "newspaper", "garage", "hotel"],
    "subject": _words("history maths biology french chemistry geography physics music"),
    "sport": ["football", "rugby", "tennis", "cricket", "hockey", "basketball"],
    "film_adj": ["funny", "sad", "long", "frightening", "strange", "brilliant", "boring", "beautiful"],
    "book_topic": [
        "the history of trains", "ancient rome", "growing vegetables", "the ocean", "mountain climbing",
        "the stars", "old castles", "famous painters", "the human brain", "birds of the forest",
    ],
    "walk_place": ["river", "canal", "beach", "cliffs", "lake", "old railway line"],
    "outing": ["concert", "street market", "flower show", "fun run", "picnic", "craft fair", "bonfire"],
    "crop": [
        "tomatoes", "potatoes", "carrots", "strawberries", "runner beans", "lettuce", "courgettes",
        "raspberries", "onions", "pumpkins",
    ],
    "feeling": ["tired", "hungry", "cold", "happy", "nervous", "excited", "bored", "busy"],
    "opener": [
        "i think", "apparently", "to be honest", "as far as i know", "by the way", "i heard that",
        "luckily", "in the end", "of course",
    ],
}

_GENERAL_STATEMENTS = [
    "it is going to be {weather_adj} and {weather_adj} {future_time}",
    "the forecast says there will be {weather_noun} {future_time}",
    "we had {weather_noun} all day {past_time}",
    "the temperature should reach {temp} degrees {future_time}",
    "it has been {weather_adj} here for {small_num} days in a row",
    "{person} got caught in the {weather_noun} on the way home",
    "i hope the weather stays {weather_adj} for the {outing} {future_time}",
    "the {vehicle} to {city} leaves at {clock}",
    "our flight to {city} was delayed by {minutes} minutes",
    "we are planning to visit {city} in {month}",
    "{person} is flying to {city} {future_time}",
    "we missed the last {vehicle} and had to take a taxi",
    "there is a direct {vehicle} from {city} to {city} every {minutes} minutes",
    "we spent {small_num} nights in {city} and loved every minute",
    "i booked a quiet room in a small hotel near the {landmark}",
    "{person} left the {travel_item} at the airport",
    "the road to the {landmark} is closed until {future_time}",
    "the museum in {city} is free on the first {day} of the month",
    "i need to buy {grocery} and {grocery} on the way home",
    "the {shop} on the corner sells the best {grocery} in town",
    "this {clothing} cost {price} in the sale",
    "{person} bought {small_num} {plural_thing} at the market",
    "we ran out of {grocery} so i went to the {shop}",
    "the price of {grocery} has gone up again this {period}",
    "i would like to return this {clothing} because it is too {size_adj}",
    "they are selling {plural_thing} at half price until {day}",
    "the {shop} closes early on {day} so we should hurry",
    "my {relative} is coming to stay with us for {small_num} days",
    "{person} is learning to {hobby} at the weekend",
    "the children want to go to the {kid_place} after school",
    "we are having {dish} for dinner {future_time}",
    "the {appliance} stopped working again {past_time}",
    "i left my {personal_item} on the {furniture}",
    "i think i left my {personal_item} in the {room}",
    "{person} called to say the {vehicle} was running late",
    "our {relative} turned {age} and had a big party",
    "the baby finally fell asleep at {clock}",
    "we painted the {room} {colour} last {season}",
    "there is some {dish} in the fridge if you are hungry",
    "the meeting has been moved to {day} at {clock}",
    "{person} starts a new job at the {workplace} next {period}",
    "i have to finish this report before {future_time}",
    "the {subject} exam is on {day} morning",
    "our office is closed for the holiday until {day}",
    "this {dish} tastes much better with a little {seasoning}",
    "{person} makes the best {dish} i have ever tasted",
    "we need {small_num} eggs and a bag of flour for the cake",
    "we watched a {film_adj} film at the cinema {past_time}",
    "the {sport} match starts at {clock} on {day}",
    "{person} runs {small_num} kilometres every morning before work",
    "there is a {outing} in the park {future_time}",
    "i have been reading a book about {book_topic}",
    "{person} felt too {feeling} to go out {past_time}",
    "i was so {feeling} after the long walk along the {walk_place}",
    "we walked along the {walk_place} and stopped for {drink} at a small cafe",
    "the new {cuisine} restaurant near the {landmark} is always full",
    "{person} has been living in {city} for {small_num} years",
    "the {appliance} makes a strange noise every time you turn it on",
    "the {shop} near the {landmark} has moved to a bigger building",
    "{person} and i are going to the {outing} {future_time}",
    "my {relative} grows {crop} in the back garden",
    "the queue at the {shop} was out of the door {past_time}",
]

_GENERAL_OTHERS = [
    "take an umbrella with you because it might {weather_verb} later",
    "remember to bring your passport and the {travel_item}",
    "do not forget to {chore} before you go to bed",
    "i will have the {dish} and a glass of {drink} please",
    "could you tell me which platform the {vehicle} to {city} leaves from",
    "how long does it take to drive from {city} to {city}",
    "do you know if the {shop} is open on {day}",
    "can i pay for the {clothing} by card",
    "is there a cash machine near the {landmark}",
    "can you {chore} before {event}",
    "please {chore} when you get home",
    "shall we try the new {cuisine} restaurant near the {landmark}",
    "would you like to come for a walk along the {walk_place}",
    "could you send me the notes from the meeting {past_time}",
    "what time does the {vehicle} from {city} get in",
    "have you seen my {personal_item} anywhere",
    "did {person} remember to {chore}",
    "would you rather have {dish} or {dish} tonight",
    "are you coming to the {outing} {future_time}",
    "how much did you pay for the {plural_thing}",
    "is it still {weather_adj} where you are",
]

# ---------------------------------------------------------------------------------------------
# The "clinical" domain: medication, investigations and ward talk
# ---------------------------------------------------------------------------------------------

_CLINICAL_SLOTS: dict[str, Slot] = {
    "drug": [
        "amoxicillin", "metformin", "lisinopril", "atorvastatin", "omeprazole", "warfarin",
        "salbutamol", "prednisolone", "levothyroxine", "amlodipine", "sertraline", "insulin detemir",
        "morphine sulphate", "ceftriaxone", "furosemide", "doxycycline", "clopidogrel",
        "gabapentin", "bisoprolol", "ramipril", "apixaban", "co amoxiclav", "nitrofurantoin",
        "lansoprazole", "simvastatin", "tramadol", "codeine phosphate", "ondansetron", "digoxin",
        "spironolactone", "methotrexate", "allopurinol", "tamsulosin", "flucloxacillin",
    ],
    "dose": _dose,
    "frequency": [
        "once daily", "twice daily", "three times a day", "every eight hours", "every twelve hours",
        "at night", "in the morning", "as required", "every four to six hours", "once weekly",
        "before meals", "with breakfast",
    ],
    "route": ["intravenously", "by intramuscular injection", "as a slow infusion", "over thirty minutes"],
    "iv_drug": [
        "ceftriaxone", "morphine sulphate", "furosemide", "co amoxiclav", "flucloxacillin", "ondansetron",
        "gentamicin", "vancomycin", "hydrocortisone", "magnesium sulphate",
    ],
    "neb_drug": ["salbutamol", "ipratropium", "hypertonic saline", "budesonide"],
    "obs_hours": ["two", "four", "six", "twelve", "eight"],
    "condition": [
        "hypertension", "type two diabetes", "pneumonia", "asthma", "atrial fibrillation", "cellulitis",
        "a urinary tract infection", "chronic kidney disease", "migraine", "iron deficiency anaemia",
        "hypothyroidism", "heart failure", "acute bronchitis", "gastritis", "sepsis",
        "deep vein thrombosis", "a pulmonary embolism", "angina", "gout", "osteoarthritis",
        "chronic obstructive pulmonary disease", "appendicitis", "pancreatitis", "a stroke",
    ],
    "test": [
        "a full blood count", "a chest radiograph", "an electrocardiogram", "a urine culture",
        "a lipid profile", "a renal profile", "an abdominal ultrasound", "a fasting glucose",
        "a liver function panel", "a computed tomography scan", "an echocardiogram", "a set of blood cultures",
        "a magnetic resonance scan", "a thyroid panel", "an arterial blood gas", "a d dimer",
        "a lumbar puncture", "a troponin level", "a coagulation screen", "a sputum sample",
    ],
    "test_result": [
        "the potassium", "the sodium", "the haemoglobin", "the creatinine", "the white cell count",
        "the troponin", "the blood sugar", "the inflammatory markers", "the platelet count",
        "the oxygen saturation",
    ],
    "level": ["raised", "low", "normal", "borderline", "markedly elevated", "slightly reduced", "stable"],
    "body_part": [
        "abdomen", "chest", "lower back", "left knee", "right shoulder", "ankle", "wrist", "throat",
        "lungs", "kidneys", "right hip", "left forearm", "pelvis", "lumbar spine", "neck",
    ],
    "clinician": [
        "the cardiologist", "the pharmacist", "the registrar", "the ward nurse", "the consultant",
        "the anaesthetist", "the physiotherapist", "the dermatologist", "the surgeon",
        "the general practitioner", "the paediatrician", "the microbiologist", "the junior doctor",
        "the midwife", "the radiologist",
    ],
    "symptom": [
        "shortness of breath", "chest pain", "nausea", "dizziness", "fever", "fatigue",
        "a persistent cough", "swelling of both ankles", "palpitations", "abdominal pain",
        "recurrent headaches", "an itchy rash", "blurred vision", "numbness in the fingers",
        "vomiting", "wheezing", "night sweats", "joint stiffness", "difficulty swallowing",
        "painful urination", "loss of appetite",
    ],
    "side_effect": [
        "a rash", "jaundice", "severe diarrhoea", "low blood pressure", "a slow pulse", "confusion",
        "muscle pain", "swelling of the lips", "bleeding gums", "drowsiness", "a dry cough",
    ],
    "reason": [
        "poor kidney function", "a fall in blood pressure", "a drug interaction", "liver impairment",
        "persistent vomiting", "his age", "her weight", "the low platelet count", "side effects",
    ],
    "ward": [
        "the cardiology ward", "the intensive care unit", "the emergency department",
        "the surgical ward", "the outpatient clinic", "the stroke unit", "the day surgery unit",
        "the maternity unit", "the renal unit", "the respiratory ward",
    ],
    "procedure": [
        "an appendectomy", "a hip replacement", "an endoscopy", "a colonoscopy", "a cataract operation",
        "a knee arthroscopy", "a skin biopsy", "a coronary angiogram", "a tonsillectomy",
        "a hernia repair",
    ],
    "vital": [
        "pulse", "respiratory rate", "oxygen saturation", "blood pressure", "temperature", "pain score",
        "fluid balance", "blood glucose",
    ],
    "patient": [
        "the patient", "the patient", "the patient in bed {bed}", "mister {surname}", "missus {surname}",
        "the elderly gentleman", "the young woman", "the child", "the new admission",
    ],
    "surname": _words(
        "patel jones okafor nguyen kowalski hughes murphy fischer brennan santos ahmed lindqvist "
        "morrison yilmaz carter"
    ),
    "bed": _num(1, 30),
    "bed_time": ["ten at night", "midnight", "six in the morning", "bedtime", "half past nine"],
    "n_days": _num(2, 14),
    "n_hours": _num(2, 48),
    "bp": _blood_pressure,
    "heart_rate": _num(42, 150),
    "sats": _num(84, 100),
    "temp_c": _temperature_c,
    "weeks": _num(2, 12),
    "tablets": _tablets,
    "units": _num(4, 40, 2),
    "unit_drug": ["insulin glargine", "insulin aspart", "soluble insulin", "heparin"],
    "instruction": [
        "with food", "on an empty stomach", "with a full glass of water", "after meals",
        "at the same time each day", "and avoid alcohol", "and avoid grapefruit juice",
    ],
    "monitoring": [
        "renal function", "the blood glucose", "the international normalised ratio", "liver enzymes",
        "the heart rhythm", "serum potassium", "the drug levels", "the fluid balance",
    ],
    "allergy": ["penicillin", "latex", "sulphonamides", "codeine", "aspirin", "iodine contrast", "peanuts"],
    "plan": [
        "discharge tomorrow", "review in clinic", "an urgent scan", "a referral to cardiology",
        "a repeat blood test", "physiotherapy on the ward", "a follow up call",
    ],
}

_CLINICAL_STATEMENTS = [
    "{patient} was started on {dose} of {drug} {frequency}",
    "{patient} was given {dose} of {iv_drug} {route}",
    "{patient} needed nebulised {neb_drug} for {symptom} overnight",
    "take {tablets} of {drug} {frequency} {instruction}",
    "{patient} was given {units} units of {unit_drug} subcutaneously",
    "the night nurse gave {units} units of {unit_drug} at {bed_time}",
    "{drug} should be taken {frequency} {instruction}",
    "{clinician} requested {test} to rule out {condition}",
    "{clinician} recommended {test} before {procedure}",
    "blood pressure was {bp} on admission",
    "her blood pressure this morning was {bp}",
    "his heart rate was {heart_rate} beats per minute at rest",
    "oxygen saturation dropped to {sats} percent on room air",
    "{patient} has a temperature of {temp_c}",
    "{patient} presented with {symptom} and {symptom}",
    "{patient} reports {symptom} for the last {n_days} days",
    "{patient} has had {symptom} since {procedure}",
    "stop {drug} if {patient} develops {side_effect}",
    "{test} showed no evidence of {condition}",
    "{test} was consistent with {condition}",
    "the dose of {drug} was reduced because of {reason}",
    "{drug} was withheld for {n_hours} hours because of {reason}",
    "{drug} can interact with {drug} so monitor {monitoring} closely",
    "{test_result} was {level} on the latest bloods",
    "{test_result} came back {level} this morning",
    "{patient} is allergic to {allergy} and must not receive {drug}",
    "{patient} was transferred to {ward} overnight",
    "{patient} was admitted to {ward} with {condition}",
    "{patient} is recovering well after {procedure}",
    "{patient} is booked for {procedure} in {weeks} weeks",
    "{clinician} will review the {vital} chart on the ward round",
    "{clinician} noted tenderness in the {body_part}",
    "there is mild swelling and bruising around the {body_part}",
    "the {vital} should be recorded every {obs_hours} hours",
    "{patient} has a history of {condition} and {condition}",
    "the plan is {plan} if the {vital} remains stable",
    "{clinician} has prescribed a {weeks} week course of {drug}",
    "continue {drug} and repeat {test} in {n_days} days",
    "please check {monitoring} before the next dose of {drug}",
    "{patient} needs {test} before starting {drug}",
    "{clinician} is concerned about {symptom} after the new {drug}",
    "the family were told that {patient} has {condition}",
    "{patient} was discharged home on {drug} {frequency}",
]

_CLINICAL_OTHERS = [
    "has {patient} had any {symptom} since the last dose",
    "when was the last dose of {drug} given",
    "could you check {monitoring} before the ward round",
    "is {patient} allergic to {allergy}",
    "should we increase the {drug} to {dose} {frequency}",
    "please document the {vital} every {obs_hours} hours",
    "who requested {test} for {patient}",
    "can the pharmacist confirm the dose of {drug}",
    "please bleep {clinician} if the {vital} falls any further",
]


@dataclass(frozen=True)
class _Grammar:
    slots: dict[str, Slot]
    statements: list[str]
    others: list[str]


_GRAMMARS: dict[str, _Grammar] = {
    "general": _Grammar(_GENERAL_SLOTS, _GENERAL_STATEMENTS, _GENERAL_OTHERS),
    "clinical": _Grammar(_CLINICAL_SLOTS, _CLINICAL_STATEMENTS, _CLINICAL_OTHERS),
}
DOMAINS: tuple[str, ...] = tuple(_GRAMMARS)

_SLOT_RE = re.compile(r"\{(\w+)\}")
_VOWEL_EXCEPTIONS = ("uni", "use", "usu", "eu", "one")


def _fix_articles(words: list[str]) -> list[str]:
    out = list(words)
    for i in range(len(out) - 1):
        nxt = out[i + 1]
        vowel = nxt[0] in "aeiou" and not nxt.startswith(_VOWEL_EXCEPTIONS)
        if out[i] == "a" and vowel:
            out[i] = "an"
        elif out[i] == "an" and not vowel:
            out[i] = "a"
    return out


def _expand(template: str, slots: dict[str, Slot], rng: random.Random) -> str:
    """Fill slots recursively; a slot used twice in one sentence never repeats a value."""
    used: dict[str, set[str]] = {}

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        slot = slots[name]
        if callable(slot):
            return slot(rng)
        seen = used.setdefault(name, set())
        choices = [v for v in slot if v not in seen] or list(slot)
        value = rng.choice(choices)
        seen.add(value)
        return value

    text = template
    for _ in range(5):
        text, count = _SLOT_RE.subn(fill, text)
        if not count:
            break
    return text


def make_sentences(domain: str, n: int, seed: int, language: str = "en") -> list[str]:
    """`n` distinct sentences of 5-16 lower-case words from `domain` in `language` (en; de, fr, es for the
    general domain), the same for the same seed."""
    if domain not in _GRAMMARS:
        raise ValueError(f"domain: {domain!r} is not one of {', '.join(DOMAINS)}")
    grammar = _GRAMMARS[domain]
    if language != "en":
        from trainables.assets.sentences_multilingual import GRAMMARS

        if domain != "general" or language not in GRAMMARS:
            raise ValueError(f"language: the {domain!r} domain has no {language!r} grammar (general has en, "
                             f"{', '.join(GRAMMARS)})")
        grammar = _Grammar(*GRAMMARS[language])
    openers = grammar.slots.get("opener")
    english = language == "en"
    rng = random.Random(f"{domain}:{seed}" if english else f"{domain}:{language}:{seed}")
    seen: set[str] = set()
    out: list[str] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 200 * n + 1000:
            raise ValueError(f"make_sentences: the {domain!r} grammar cannot make {n} distinct sentences")
        if rng.random() < 0.75:
            template = rng.choice(grammar.statements)
            if openers and rng.random() < 0.12 and not template.startswith("i think"):
                template = f"{rng.choice(openers)} {template}"
        else:
            template = rng.choice(grammar.others)
        words = _expand(template, grammar.slots, rng).split()
        words = _fix_articles(words) if english else words  # a/an: English only
        sentence = " ".join(words)
        if MIN_WORDS <= len(words) <= MAX_WORDS and sentence not in seen:
            seen.add(sentence)
            out.append(sentence)
    return out


