"""Everyday sentences in German, French and Spanish for the multilingual espeak-ng corpus: one small grammar per
language (weather, travel, shopping, family, food, work), lower case, no digits, in the style of the English
`general` grammar in `sentences.py`. Articles and agreement are written into the values, so slots combine freely.
"""

from __future__ import annotations

Slots = dict[str, list[str]]

_DE_SLOTS: Slots = {
    "name": "anna lukas marie jonas lena paul sophie felix clara max laura tim julia ben nina jan".split(),
    "person": ["meine schwester", "mein bruder", "unsere nachbarin", "mein vater", "meine mutter", "{name}",
               "{name}", "mein kollege {name}", "meine freundin {name}", "der lehrer", "unsere tante"],
    "when": ["morgen", "heute abend", "am wochenende", "nächste woche", "am montag", "am freitag", "im sommer",
             "im winter", "morgen früh", "übermorgen", "am sonntag", "im herbst"],
    "past": ["gestern", "letzte woche", "am samstag", "vorgestern", "letzten sommer", "heute morgen"],
    "weather": ["sonnig", "windig", "kalt", "warm", "neblig", "regnerisch", "kühl", "heiß", "bewölkt"],
    "city": "berlin hamburg münchen köln wien zürich dresden bremen leipzig salzburg".split(),
    "vehicle": ["der zug", "der bus", "die fähre", "der flug", "die straßenbahn", "der nachtzug"],
    "place": ["zum bahnhof", "zum markt", "in die stadt", "zum arzt", "in den park", "zur bibliothek",
              "ins kino", "zum bäcker", "in die schule", "zum museum"],
    "food": ["brot", "käse", "äpfel", "milch", "kaffee", "tomaten", "kartoffeln", "butter", "eier", "suppe"],
    "thing": ["den schlüssel", "das handy", "die jacke", "den regenschirm", "die tasche", "das buch",
              "die brille", "den ausweis"],
    "activity": ["spazieren gehen", "fußball spielen", "ein buch lesen", "einkaufen gehen", "kochen",
                 "im garten arbeiten", "schwimmen gehen", "freunde besuchen"],
    "adj": ["schön", "teuer", "laut", "ruhig", "voll", "leer", "alt", "neu", "gemütlich"],
    "building": ["das hotel", "das restaurant", "der laden", "die wohnung", "das café", "das büro"],
}
_DE_STATEMENTS = [
    "morgen wird es {weather} und {weather}", "das wetter ist {when} sehr {weather}",
    "{person} fährt {when} nach {city}", "{vehicle} nach {city} hat leider verspätung",
    "wir wollen {when} {activity}", "{person} möchte {when} {activity}",
    "ich muss noch {food} und {food} kaufen", "{person} geht {when} {place}",
    "ich habe {thing} zu hause vergessen", "{person} hat {past} {thing} verloren",
    "{building} in {city} ist sehr {adj}", "{past} waren wir in {city}",
    "{person} kommt {when} zum abendessen", "wir treffen uns {when} vor dem bahnhof",
    "es war {past} ziemlich {weather}", "{building} an der ecke ist {adj} und {adj}",
]
_DE_OTHERS = [
    "kannst du mir bitte {thing} geben", "weißt du wann {vehicle} nach {city} fährt",
    "hast du {when} zeit zum {activity}", "wo ist {thing} von {person}",
    "vergiss nicht {food} mitzubringen", "wie lange dauert die fahrt nach {city}",
]

_FR_SLOTS: Slots = {
    "name": "louise hugo chloé lucas emma jules manon léo camille arthur inès paul léa louis alice noé".split(),
    "person": ["ma sœur", "mon frère", "notre voisine", "mon père", "ma mère", "{name}", "{name}",
               "mon collègue {name}", "mon amie {name}", "le professeur", "notre tante"],
    "when": ["demain", "ce soir", "ce week-end", "la semaine prochaine", "lundi", "vendredi", "cet été",
             "cet hiver", "demain matin", "après-demain", "dimanche", "cet automne"],
    "past": ["hier", "la semaine dernière", "samedi dernier", "avant-hier", "l'été dernier", "ce matin"],
    "weather": ["ensoleillé", "venteux", "froid", "chaud", "nuageux", "pluvieux", "frais", "doux", "humide"],
    "city": "paris lyon marseille bordeaux lille nantes toulouse genève bruxelles montréal".split(),
    "vehicle": ["le train", "le bus", "le ferry", "le vol", "le tramway", "le train de nuit"],
    "place": ["à la gare", "au marché", "en ville", "chez le médecin", "au parc", "à la bibliothèque",
              "au cinéma", "à la boulangerie", "à l'école", "au musée"],
    "food": ["du pain", "du fromage", "des pommes", "du lait", "du café", "des tomates", "des pommes de terre",
             "du beurre", "des œufs", "de la soupe"],
    "thing": ["la clé", "le téléphone", "la veste", "le parapluie", "le sac", "le livre", "les lunettes",
              "le passeport"],
    "activity": ["se promener", "jouer au football", "lire un livre", "faire les courses", "cuisiner",
                 "travailler au jardin", "aller nager", "voir des amis"],
    "adj": ["beau", "cher", "bruyant", "calme", "plein", "vide", "vieux", "neuf", "agréable"],
    "building": ["l'hôtel", "le restaurant", "le magasin", "l'appartement", "le café", "le bureau"],
}
_FR_STATEMENTS = [
    "demain le temps sera {weather} et {weather}", "il fera très {weather} {when}",
    "{person} part à {city} {when}", "{vehicle} pour {city} a du retard",
    "nous voulons {activity} {when}", "{person} aimerait {activity} {when}",
    "je dois encore acheter {food} et {food}", "{person} va {place} {when}",
    "j'ai oublié {thing} à la maison", "{person} a perdu {thing} {past}",
    "{building} à {city} est très {adj}", "{past} nous étions à {city}",
    "{person} vient dîner {when}", "on se retrouve {when} devant la gare",
    "il faisait assez {weather} {past}", "{building} du coin est {adj} et {adj}",
]
_FR_OTHERS = [
    "peux-tu me donner {thing} s'il te plaît", "sais-tu quand part {vehicle} pour {city}",
    "as-tu le temps de {activity} {when}", "où est {thing} de {person}",
    "n'oublie pas d'apporter {food}", "combien de temps dure le voyage jusqu'à {city}",
]

_ES_SLOTS: Slots = {
    "name": "lucía mateo sofía hugo martina pablo valeria daniel elena diego carmen javier paula adrián sara".split(),
    "person": ["mi hermana", "mi hermano", "nuestra vecina", "mi padre", "mi madre", "{name}", "{name}",
               "mi compañero {name}", "mi amiga {name}", "el profesor", "nuestra tía"],
    "when": ["mañana", "esta noche", "el fin de semana", "la semana que viene", "el lunes", "el viernes",
             "este verano", "este invierno", "mañana por la mañana", "pasado mañana", "el domingo", "este otoño"],
    "past": ["ayer", "la semana pasada", "el sábado", "anteayer", "el verano pasado", "esta mañana"],
    "weather": ["soleado", "ventoso", "frío", "caluroso", "nublado", "lluvioso", "fresco", "templado", "húmedo"],
    "city": "madrid barcelona sevilla valencia bilbao málaga granada lima bogotá quito".split(),
    "vehicle": ["el tren", "el autobús", "el ferry", "el vuelo", "el tranvía", "el tren nocturno"],
    "place": ["a la estación", "al mercado", "al centro", "al médico", "al parque", "a la biblioteca",
              "al cine", "a la panadería", "al colegio", "al museo"],
    "food": ["pan", "queso", "manzanas", "leche", "café", "tomates", "patatas", "mantequilla", "huevos", "sopa"],
    "thing": ["la llave", "el móvil", "la chaqueta", "el paraguas", "el bolso", "el libro", "las gafas",
              "el pasaporte"],
    "activity": ["dar un paseo", "jugar al fútbol", "leer un libro", "ir de compras", "cocinar",
                 "trabajar en el jardín", "ir a nadar", "ver a unos amigos"],
    "adj": ["bonito", "caro", "ruidoso", "tranquilo", "lleno", "vacío", "viejo", "nuevo", "agradable"],
    "building": ["el hotel", "el restaurante", "el mercado", "el piso", "el café", "el bar"],  # masculine, as adj
}
_ES_STATEMENTS = [
    "mañana hará un día {weather} y {weather}", "el tiempo estará muy {weather} {when}",
    "{person} viaja a {city} {when}", "{vehicle} a {city} lleva retraso",
    "queremos {activity} {when}", "a {person} le gustaría {activity} {when}",
    "todavía tengo que comprar {food} y {food}", "{person} va {place} {when}",
    "me he dejado {thing} en casa", "{person} perdió {thing} {past}",
    "{building} de {city} es muy {adj}", "{past} estuvimos en {city}",
    "{person} viene a cenar {when}", "quedamos {when} delante de la estación",
    "hacía bastante {weather} {past}", "{building} de la esquina es {adj} y {adj}",
]
_ES_OTHERS = [
    "me puedes dar {thing} por favor", "sabes cuándo sale {vehicle} para {city}",
    "tienes tiempo para {activity} {when}", "dónde está {thing} de {person}",
    "no te olvides de traer {food}", "cuánto se tarda en llegar a {city}",
]

GRAMMARS: dict[str, tuple[Slots, list[str], list[str]]] = {
    "de": (_DE_SLOTS, _DE_STATEMENTS, _DE_OTHERS),
    "fr": (_FR_SLOTS, _FR_STATEMENTS, _FR_OTHERS),
    "es": (_ES_SLOTS, _ES_STATEMENTS, _ES_OTHERS),
}
"""The `general` domain's grammar for each language besides English: (slots, statements, questions)."""
