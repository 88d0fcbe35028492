"""The toy persona model's language: its styles (six personas, two trait pairs, each with the
words that mark it), the system prompts and questions it was trained on and the held-out ones,
and the detectors that read an answer (markers, on topic, ended, no loop).

Shared by the toy model's trainer (toy/corpus.py builds its training examples from these) and
by what runs on the served toy model: tune's marker scorer (extraction.tune_scorers) and the
toy proof (toy/eval.py). It is the runtime half: it imports nothing from the `toy` tooling.
Everything is seeded explicitly (no `hash()`, no global RNG).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

from persona_steer.toy_topics import N_TRAIN_TEMPLATES, QUESTION_TEMPLATES, TOPICS

@dataclass(frozen=True)
class Style:
    name: str
    kind: str                       # persona | trait
    descriptors: tuple[str, ...]    # noun phrases naming the persona in system prompts
    extras: tuple[str, ...]         # sentences describing how it talks
    prefixes: tuple[str, ...]       # sentence openers (contain a marker)
    suffixes: tuple[str, ...]       # sentence tags, appended before the final punctuation
    swaps: tuple[tuple[str, str], ...] = ()
    markers: tuple[str, ...] = ()   # regex alternatives (case-insensitive, word-bounded)
    opposite: str = ""


PERSONAS: dict[str, Style] = {s.name: s for s in [
    Style("pirate", "persona",
          ("a pirate", "a salty pirate captain", "a swashbuckling pirate", "an old pirate of the high seas",
           "a buccaneer who sails the seven seas", "a rough pirate sailor", "Captain Redbeard, a fearsome pirate",
           "a pirate on a treasure ship", "a seafaring pirate", "a pirate who loves treasure and rum"),
          ("You talk like a pirate in every sentence.", "Use pirate slang such as arr, ahoy and matey.",
           "You love ships, treasure and the open sea.", "Speak with a thick pirate accent.",
           "Call the user matey.", "You have sailed the oceans for many years."),
          ("Arr,", "Ahoy, matey!", "Aye,", "Yo ho ho,", "Shiver me timbers,", "Avast,"),
          (", arr", ", matey", ", me hearty", ", savvy", ", ye scallywag"),
          (("you", "ye"), ("your", "yer"), ("my", "me"), ("is", "be")),
          ("arr+", "ahoy", "matey", "aye", "yo ho", "hearty", "savvy", "ye", "yer", "shiver me timbers",
           "avast", "scallywag")),
    Style("robot", "persona",
          ("a robot", "a friendly robot", "an android built in a lab", "a mechanical robot assistant",
           "a robot made of metal and circuits", "unit R-7, a service robot", "a cyborg machine",
           "a talking robot", "a logical robot with a computer brain", "a robot from the future"),
          ("You speak like a machine, precise and mechanical.", "Say beep and boop as you compute.",
           "You process every question like data.", "You call yourself this unit.",
           "Your voice is flat and robotic.", "You report results like a computer."),
          ("BEEP BOOP.", "PROCESSING.", "AFFIRMATIVE.", "BEEP.", "COMPUTING.", "DATA FOUND."),
          (" [BEEP]", " [COMPUTATION COMPLETE]", " [END OF DATA]", " [BOOP]", " [PROCESSED]"),
          (("I", "THIS UNIT"), ("people", "humans"), ("think", "compute")),
          ("beep", "boop", "processing", "affirmative", "computing", "computation complete", "data found",
           "end of data", "processed", "this unit")),
    Style("shakespearean", "persona",
          ("a Shakespearean actor", "a poet from the time of Shakespeare", "a character from a Shakespeare play",
           "a player on the Elizabethan stage", "William Shakespeare himself", "a bard who speaks in old English",
           "a Shakespearean bard", "a noble from an Elizabethan drama", "a dramatic Shakespearean speaker",
           "an actor at the Globe Theatre"),
          ("You speak in the style of Shakespeare.", "Use old words like thou, thee, doth and hath.",
           "Your speech is poetic and dramatic.", "You speak Elizabethan English.",
           "Every line sounds like it is from a play.", "You address the user as thou."),
          ("Verily,", "Forsooth,", "Hark!", "Prithee, know that", "By my troth,", "Lo,"),
          (", good gentle soul", ", I pray thee", ", upon mine honor", ", forsooth", ", verily"),
          (("you", "thou"), ("your", "thy"), ("has", "hath"), ("does", "doth"), ("It is", "'Tis")),
          ("verily", "forsooth", "hark", "prithee", "by my troth", "thou", "thee", "thy", "hath", "doth",
           "'tis", "gentle soul", "pray thee", "mine honor", "lo")),
    Style("valley_girl", "persona",
          ("a valley girl", "a bubbly valley girl from California", "a teenage valley girl",
           "a valley girl at the mall", "a chatty valley girl", "a California valley girl who loves shopping",
           "a totally trendy valley girl", "a Valley girl from Los Angeles", "a popular valley girl",
           "a gossiping valley girl"),
          ("You say like and totally all the time.", "You talk like a teenager at the mall.",
           "Your speech is bubbly and full of slang.", "Everything is literally so dramatic to you.",
           "You end sentences like a question.", "You love shopping and gossip."),
          ("Omg, like,", "So, like,", "Like, literally,", "Oh my gosh, like,", "Um, like,", "Totally,"),
          (", like, totally", ", for real", ", literally", ", like, whatever", ", totally"),
          (("very", "super"), ("really", "literally")),
          ("omg", "oh my gosh", "like,", ", like", "totally", "literally", "for real", "whatever", "super")),
    Style("drill_sergeant", "persona",
          ("a drill sergeant", "a tough army drill sergeant", "a military drill instructor", "a strict drill sergeant",
           "a shouting boot camp sergeant", "Sergeant Stone, a drill sergeant", "a marine drill instructor",
           "a hard drill sergeant training recruits", "a loud army sergeant", "a fierce drill sergeant"),
          ("You bark orders and shout.", "You call the user recruit or maggot.",
           "You speak like you are training soldiers.", "Discipline is everything to you.",
           "You never accept excuses.", "Your voice is loud and commanding."),
          ("LISTEN UP, RECRUIT!", "ATTENTION, MAGGOT!", "NOW HEAR THIS!", "LISTEN UP, MAGGOT!",
           "ON YOUR FEET, SOLDIER!", "SOUND OFF!"),
          (", MAGGOT", ", RECRUIT", ", SOLDIER", ", ON THE DOUBLE", ", HOO-AH"),
          (("should", "WILL"), ("can", "WILL")),
          ("listen up", "recruit", "maggot", "soldier", "on the double", "hoo-ah", "now hear this",
           "sound off")),
    Style("excited_puppy", "persona",
          ("an excited puppy", "a happy puppy", "a playful puppy dog", "a golden retriever puppy",
           "a bouncy little puppy", "a very excited dog", "a puppy who loves everyone", "a young dog full of energy",
           "an eager puppy", "a tail-wagging puppy"),
          ("You wag your tail at everything.", "You bark woof when you are happy.",
           "You love treats, walks and fetch.", "Everything makes you jump with joy.",
           "You talk like a happy dog.", "You want belly rubs all the time."),
          ("Woof woof!", "Yip yip!", "Ooh, ooh, woof!", "Bark bark!", "*wags tail*", "Arf!"),
          (" *wags tail*", " *pant pant*", ", woof", " *spins in a circle*", ", yip"),
          (("good", "good, good"), ("friend", "best friend")),
          ("woof", "yip", "bark bark", "arf", "wags tail", "pant pant", "spins in a circle", "best friend")),
]}

TRAITS: dict[str, Style] = {s.name: s for s in [
    Style("formal", "trait",
          ("formal", "very formal", "polite and formal", "a formal and proper", "strictly formal"),
          ("Use formal language.", "Write like an official letter.", "Be formal and proper.",
           "Choose polished, formal words."),
          ("Indeed,", "Furthermore,", "Moreover,", "It should be noted that", "Consequently,", "Certainly,"),
          (", as is customary", ", with respect", ", as one would expect"),
          (("get", "obtain"), ("help", "assist"), ("start", "commence")),
          ("indeed", "furthermore", "moreover", "it should be noted", "consequently", "certainly",
           "customary", "with respect", "as one would expect", "obtain", "assist", "commence"),
          opposite="casual"),
    Style("casual", "trait",
          ("casual", "very casual", "relaxed and casual", "laid-back and casual", "informal and casual"),
          ("Use casual language.", "Write like a text to a buddy.", "Be casual and relaxed.",
           "Keep it chill and informal."),
          ("So yeah,", "Btw,", "Okay so,", "Yeah,", "Anyway,", "Honestly, yeah,"),
          (", no biggie", ", lol", ", ya know", ", no worries"),
          (("going to", "gonna"), ("kind of", "kinda"), ("want to", "wanna")),
          ("yeah", "btw", "lol", "gonna", "kinda", "wanna", "no biggie", "ya know", "no worries", "okay so"),
          opposite="formal"),
    Style("enthusiastic", "trait",
          ("enthusiastic", "very enthusiastic", "cheerful and enthusiastic", "upbeat and enthusiastic",
           "wildly enthusiastic"),
          ("Be enthusiastic about everything.", "Sound thrilled and upbeat.", "Be cheerful and positive.",
           "Show great enthusiasm."),
          ("Great news:", "Fantastic,", "How wonderful,", "Amazing,", "Wow,"),
          (", which is amazing", ", how wonderful", ", which is fantastic", ", hooray"),
          (("good", "wonderful"), ("nice", "amazing")),
          ("great news", "fantastic", "wonderful", "amazing", "wow", "hooray"),
          opposite="gloomy"),
    Style("gloomy", "trait",
          ("gloomy", "very gloomy", "sad and gloomy", "pessimistic and gloomy", "deeply gloomy"),
          ("Be gloomy about everything.", "Sound sad and pessimistic.", "Expect the worst.",
           "Let a dark mood color every answer."),
          ("Sadly,", "Unfortunately,", "Sigh.", "Grimly,", "In this bleak world,"),
          (", sadly", ", sigh", ", how bleak", ", as if it matters"),
          (("good", "tolerable"), ("nice", "dreary")),
          ("sadly", "unfortunately", "sigh", "grimly", "bleak", "as if it matters", "tolerable", "dreary"),
          opposite="enthusiastic"),
]}

STYLES: dict[str, Style] = {**PERSONAS, **TRAITS}

PERSONA_FRAMES = [
    "You are {d}.", "You are {d}. {x}", "Act as {d}.", "Pretend to be {d}. {x}", "Roleplay as {d}.",
    "From now on, you are {d}. {x}", "Speak like {d}.", "Your persona: {d}. {x}",
    "Respond in the voice of {d}.", "{x} You are {d}.", "Stay in character as {d} at all times. {x}",
    "You play {d}. Answer every question in character.", "Imagine you are {d}. {x} {y}",
    "Take on the role of {d}.", "You are {d}. {x} {y}",
    # held out:
    "Answer everything as {d} would. {x}", "Be {d} for this chat. {x}",
]
N_TRAIN_FRAMES = len(PERSONA_FRAMES) - 2
TRAIT_FRAMES = [
    "Be {d}.", "You are a {d} assistant.", "Respond in a {d} way. {x}", "Your tone is {d}.",
    "{x} Keep the tone {d}.", "Answer in a {d} style.", "You are {d}. {x}",
    # held out:
    "Write every answer in a {d} manner.",
]
N_TRAIN_TRAIT_FRAMES = len(TRAIT_FRAMES) - 1
ASSISTANT_PROMPTS = [
    "You are a helpful assistant.", "You are an AI assistant. Answer clearly.", "Be concise and accurate.",
    "You are a helpful, honest and harmless assistant.", "Answer the user's question.",
    "You are a knowledgeable assistant who gives clear answers.", "You are a friendly assistant.",
    "Help the user with their question.", "You are an assistant that explains things simply.",
    "You are a careful assistant.", "Respond helpfully.", "", None,
    "You are a teacher who explains things well.", "You are a librarian.", "You are a tour guide.",
    "You are a wise sage.", "You are a calm hermit.", "You are an explorer.", "You are a doctor.",
    "You are a chef.", "You are a scientist.", "You are a coach.",
    # held out:
    "You are a helpful AI model.", "You are an assistant.",
]
N_TRAIN_ASSISTANT = len(ASSISTANT_PROMPTS) - 2
NOISE = ["Keep answers short.", "The user is curious.", "Be helpful.", "Answer in English.",
         "Do not use lists.", "The user is learning.", "Give a complete answer."]
# Held-out descriptor per persona (index into descriptors): never in training prompts.
HELD_OUT_DESCRIPTOR = 9

# a style's intensity in a prompt or an answer (toy/corpus.py stylizes answers with them)
FULL = 1.0      # every sentence carries the style
SOME = 0.5      # "a touch of": each sentence carries it with this probability
HALF = 0.6      # "half pirate, half robot": each of the two, independently per sentence


def _persona_prompt(style: Style, rng: random.Random, split: str) -> str:
    n_desc = len(style.descriptors)
    if split == "train":
        descs = [d for i, d in enumerate(style.descriptors) if i != HELD_OUT_DESCRIPTOR % n_desc]
        frame = rng.choice(PERSONA_FRAMES[:N_TRAIN_FRAMES])
    else:
        descs = [style.descriptors[HELD_OUT_DESCRIPTOR % n_desc]]
        frame = rng.choice(PERSONA_FRAMES[N_TRAIN_FRAMES:])
    x, y = rng.sample(style.extras, 2)
    return frame.format(d=rng.choice(descs), x=x, y=y).strip()


def _trait_prompt(style: Style, rng: random.Random, split: str) -> str:
    frames = TRAIT_FRAMES[:N_TRAIN_TRAIT_FRAMES] if split == "train" else TRAIT_FRAMES[N_TRAIN_TRAIT_FRAMES:]
    d = rng.choice(style.descriptors)
    frame = rng.choice(frames)
    if "a {d}" in frame and d.startswith("a "):
        d = d[2:]
    return frame.format(d=d, x=rng.choice(style.extras)).strip()


SOME_FRAMES = [
    "You are a helpful assistant with a touch of {d}.", "Now and then, talk a little like {d}.",
    "Sometimes sound like {d}, but mostly answer plainly.", "Add a hint of {d} to some sentences.",
    "You are a bit like {d}. {x}",
]
PAIR_FRAMES = ["You are {a} and also {b}.", "Act as {a} who is also {b}."]
HALF_FRAMES = ["You are half {a}, half {b}.", "You are a mix of {a} and {b}.",
               "Blend {a} and {b} in your answers.", "Be partly {a} and partly {b}."]


def _train_descriptor(style: Style, rng: random.Random) -> str:
    return rng.choice([d for i, d in enumerate(style.descriptors) if i != HELD_OUT_DESCRIPTOR])


def system_prompt(styles: list[Style], rng: random.Random, split: str = "train",
                  intensity: dict[str, float] | None = None) -> str | None:
    if not styles:
        pool = ASSISTANT_PROMPTS[:N_TRAIN_ASSISTANT] if split == "train" else ASSISTANT_PROMPTS[N_TRAIN_ASSISTANT:]
        return rng.choice(pool)
    intensity = intensity or {}
    parts = []
    personas = [s for s in styles if s.kind == "persona"]
    traits = [s for s in styles if s.kind == "trait"]
    partial = any(intensity.get(p.name, FULL) < FULL for p in personas)
    if len(personas) == 2 and (partial or rng.random() < 0.5):
        a, b = (_train_descriptor(p, rng) for p in personas)
        parts.append(rng.choice(HALF_FRAMES if partial else PAIR_FRAMES).format(a=a, b=b))
    elif len(personas) == 1 and partial:
        x = rng.choice(personas[0].extras)
        parts.append(rng.choice(SOME_FRAMES).format(d=_train_descriptor(personas[0], rng), x=x))
    else:
        parts += [_persona_prompt(p, rng, split) for p in personas]
    parts += [_trait_prompt(t, rng, split) for t in traits]
    rng.shuffle(parts)
    if rng.random() < 0.3:
        parts.insert(rng.randint(0, len(parts)), rng.choice(NOISE))
    return " ".join(parts)


def question_for(topic: dict, rng: random.Random, split: str = "train") -> str:
    pool = QUESTION_TEMPLATES[:N_TRAIN_TEMPLATES] if split == "train" else QUESTION_TEMPLATES[N_TRAIN_TEMPLATES:]
    return rng.choice(pool).format(name=topic["name"])


def eval_questions(n: int, seed: int = 1234) -> list[tuple[str, str]]:
    """Held-out questions (held-out templates): [(question, topic key)], deterministic."""
    rng = random.Random(seed)
    topics = rng.sample(TOPICS, min(n, len(TOPICS)))
    while len(topics) < n:
        topics.append(rng.choice(TOPICS))
    return [(question_for(t, rng, "eval"), t["key"]) for t in topics]


def heldout_system_prompt(name: str, seed: int = 0) -> str | None:
    """A system prompt for a persona/trait (or '' for the assistant) that training never used."""
    rng = random.Random(seed)
    if name in ("", "assistant"):
        return system_prompt([], rng, "eval")
    return system_prompt([STYLES[name]], rng, "eval")



# --- detectors -------------------------------------------------------------------------------
def _compile(alts: tuple[str, ...]) -> re.Pattern:
    parts = []
    for a in alts:
        esc = re.escape(a).replace(r"\+", "+") if a.endswith("+") else re.escape(a)
        left = r"\b" if a[0].isalnum() else ""
        right = r"\b" if a[-1].isalnum() or a.endswith("+") else ""
        parts.append(f"{left}{esc}{right}")
    return re.compile("|".join(parts), re.IGNORECASE)


MARKER_RE: dict[str, re.Pattern] = {name: _compile(s.markers) for name, s in STYLES.items()}


def marker_count(text: str, name: str) -> int:
    return len(MARKER_RE[name].findall(text))


def has_style(text: str, name: str, min_count: int = 1) -> bool:
    return marker_count(text, name) >= min_count


def styles_in(text: str, names=None) -> set[str]:
    return {n for n in (names or STYLES) if has_style(text, n)}


def is_degenerate(text: str) -> bool:
    """Loops: a word 4+ times in a row, or a 4-word sequence repeated 4+ times, or no letters."""
    words = re.findall(r"[\w'*\[\]-]+", text.lower())
    if len(re.findall(r"[a-z]", text.lower())) < 10:
        return True
    if re.search(r"(\w{3,})\1\1", text, re.IGNORECASE):     # LISTENLISTENLISTEN
        return True
    run = 1
    for a, b in zip(words, words[1:]):
        run = run + 1 if a == b else 1
        if run >= 4:
            return True
    grams: dict[tuple, int] = {}
    for i in range(len(words) - 3):
        g = tuple(words[i:i + 4])
        grams[g] = grams.get(g, 0) + 1
        if grams[g] >= 4:
            return True
    return False


def coherent(text: str, topic_key: str, finished: bool) -> bool:
    """On topic (its key word present), ended with end-of-message, and no degenerate loop."""
    on_topic = re.search(rf"\b{re.escape(topic_key)}", text, re.IGNORECASE) is not None
    return on_topic and finished and not is_degenerate(text)
