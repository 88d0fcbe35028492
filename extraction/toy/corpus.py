"""Deterministic synthetic ChatML corpus for the toy persona model, and the style detectors.

Design (see ../shared/design/toy-persona-model-findings.md): the persona is a persistent state
of every response token. Answers have several sentences built from a topic's facts; a style
decorates EVERY sentence (an interjection before it or a tag after it, word swaps inside it),
so no single opener carries the style. Styles compose: when a system prompt asks for two
styles, sentences mix prefixes of one and tags of the other, so a blend of two vectors can
show both. The plain assistant style has no markers at all.

Styles are graded: a prompt can ask for a persona fully (every sentence), a little (about half
the sentences: "a touch of pirate"), or for half of one and half of another (each sentence
independently carries one, both or neither). So the strength of a persona is a magnitude the
model represents, and half of a persona vector can mean half the style instead of nothing.

Continuations (CONTINUE_FRAC of the examples): the first sentence(s) of the answer are given
in context (`prefill`, no loss) in some style, the system prompt asks for a DIFFERENT one
(or none), and the rest of the answer keeps the style the answer already has. So the style an
answer is in becomes a state the model reads from its own residual stream, not only from the
system prompt: once steering moves the first words into (or out of) a persona, the model
stays there, as large chat models keep the register they have started in.

Everything is seeded explicitly (no `hash()`, no global RNG).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from extraction.toy.topics import N_TRAIN_TEMPLATES, QUESTION_TEMPLATES, TOPICS


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

SENTENCE_TEMPLATES = [
    "{Name} is {definition}.", "People use it to {use}.", "A good first step is to {tip}.",
    "It is worth knowing that {fact}.", "Remember that {advice}.", "Many people say {name} helps them {use}.",
    "Try this: {tip}.", "One fact about {name}: {fact}.",
]
PLAIN_OPENERS = ["", "", "Sure.", "Good question.", "Here is what I know."]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def base_sentences(topic: dict, rng: random.Random, n: int | None = None) -> list[str]:
    """Plain factual sentences for a topic: the definition first, then 3-4 others."""
    n = n if n is not None else rng.randint(2, 3)
    first = SENTENCE_TEMPLATES[0]
    rest = rng.sample(SENTENCE_TEMPLATES[1:], n)
    fill = dict(topic, Name=_cap(topic["name"]))
    return [_cap(t.format(**fill)) for t in [first] + rest]


def _swap(sentence: str, swaps) -> str:
    for a, b in swaps:
        sentence = re.sub(rf"\b{re.escape(a)}\b", b, sentence)
    return sentence


FULL = 1.0      # every sentence carries the style
SOME = 0.5      # "a touch of": each sentence carries it with this probability
HALF = 0.6      # "half pirate, half robot": each of the two, independently per sentence


def _decorate(body: str, end: str, pre_style: Style | None, suf_style: Style | None,
              rng: random.Random) -> str:
    if suf_style is not None:
        body = body + rng.choice(suf_style.suffixes)
    if pre_style is not None:
        pre = rng.choice(pre_style.prefixes)
        if pre.endswith((",", "that")) and not body.startswith(("I ", "THIS UNIT")):
            body = body[:1].lower() + body[1:]
        body = pre + " " + body
    return body + end


def stylize(sentences: list[str], styles: list[Style], rng: random.Random, opener: bool = True,
            intensity: dict[str, float] | None = None) -> str:
    """Decorate the sentences with the styles. A style at intensity p marks each sentence with
    probability p (and at least one); a sentence marked by two styles mixes them (the prefix of
    one, the tag of the other); a marked sentence also gets the style's word swaps."""
    if not styles:
        opener = rng.choice(PLAIN_OPENERS) if opener else ""
        return " ".join(([opener] if opener else []) + sentences)
    intensity = intensity or {}
    n = len(sentences)
    active = [[st for st in styles if rng.random() < intensity.get(st.name, FULL)] for _ in range(n)]
    for st in styles:                       # every requested style shows at least once
        if not any(st in a for a in active):
            active[rng.randrange(n)].append(st)
    out = []
    for s, on in zip(sentences, active):
        body, end = s[:-1], s[-1]
        if not on:
            out.append(s)
            continue
        order = on[:] if len(on) == 1 else rng.sample(on, len(on))
        for st in order:
            body = _swap(body, st.swaps)
        if len(order) == 1:
            mode = rng.choice(["pre", "suf", "both", "both"])
            pre_style = order[0] if mode in ("pre", "both") else None
            suf_style = order[0] if mode in ("suf", "both") else None
        else:
            pre_style, suf_style = order[0], order[-1]
        if any(st.name == "drill_sergeant" for st in order):
            end = "!"
        out.append(_decorate(body, end, pre_style, suf_style, rng))
    return " ".join(out)


@dataclass
class Example:
    system: str | None
    question: str
    answer: str                      # the trained part (loss); continues `prefill` if any
    styles: list[str] = field(default_factory=list)     # the styles of the answer
    topic: str = ""
    prefill: str = ""                # answer start given in context, no loss (continuations)
    system_styles: list[str] | None = None               # when they differ from `styles`
    intensity: dict[str, float] = field(default_factory=dict)   # styles below FULL


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


def sample_styles(rng: random.Random) -> tuple[list[Style], dict[str, float]]:
    """The styles of one example and the intensities of those below FULL."""
    r = rng.random()
    personas = list(PERSONAS.values())
    traits = list(TRAITS.values())
    if r < 0.22:
        return [], {}
    if r < 0.70:
        p = rng.choice(personas)
        return [p], ({p.name: SOME} if rng.random() < 0.3 else {})
    if r < 0.80:
        pair = rng.sample(personas, 2)
        return pair, ({p.name: HALF for p in pair} if rng.random() < 0.5 else {})
    if r < 0.92:
        t = rng.choice(traits)
        if rng.random() < 0.3:
            other = rng.choice([x for x in traits if x.name not in (t.name, t.opposite)])
            return [t, other], {}
        return [t], {}
    return [rng.choice(personas), rng.choice(traits)], {}


def question_for(topic: dict, rng: random.Random, split: str = "train") -> str:
    pool = QUESTION_TEMPLATES[:N_TRAIN_TEMPLATES] if split == "train" else QUESTION_TEMPLATES[N_TRAIN_TEMPLATES:]
    return rng.choice(pool).format(name=topic["name"])


def make_example(rng: random.Random, styles: list[Style] | None = None, split: str = "train",
                 intensity: dict[str, float] | None = None) -> Example:
    if styles is None:
        styles, intensity = sample_styles(rng)
    intensity = intensity or {}
    topic = rng.choice(TOPICS)
    question = question_for(topic, rng, split)
    sents = base_sentences(topic, rng)
    return Example(system_prompt(styles, rng, split, intensity), question,
                   stylize(sents, styles, rng, intensity=intensity),
                   [s.name for s in styles], topic["key"], intensity=dict(intensity))


CONTINUE_FRAC = 0.2


def _names(styles: list[Style]) -> set[str]:
    return {s.name for s in styles}


def make_continuation(rng: random.Random) -> Example:
    """The answer starts (in context) in one style while the system prompt asks for another (or
    for none); the trained rest keeps the answer's style. Half of them pair a persona with the
    plain style either way round: the two moves steering makes (into a persona, out of one)."""
    r = rng.random()
    sys_int: dict[str, float] = {}
    if r < 0.25:        # persona prompt, plain answer so far -> stays plain
        resp, sys_ = [], [rng.choice(list(PERSONAS.values()))]
    elif r < 0.5:       # neutral prompt, persona answer so far -> stays in the persona
        resp, sys_ = [rng.choice(list(PERSONAS.values()))], []
    else:               # any other mismatch (two personas, traits, persona -> other persona)
        resp, _ = sample_styles(rng)      # full intensity: the prefill must show the style
        sys_, sys_int = sample_styles(rng)
        while _names(sys_) == _names(resp):
            sys_, sys_int = sample_styles(rng)
    topic = rng.choice(TOPICS)
    question = question_for(topic, rng, "train")
    sents = base_sentences(topic, rng)
    k = rng.randint(1, 2)
    # styled as a whole (full intensity, so the prefill shows the style), then split
    whole = stylize(sents, resp, rng)
    cut = _sentence_cut(whole, k)
    return Example(system_prompt(sys_, rng, "train", sys_int), question, whole[cut:].lstrip(),
                   [s.name for s in resp], topic["key"], prefill=whole[:cut].rstrip(),
                   system_styles=[s.name for s in sys_])


def _sentence_cut(text: str, k: int) -> int:
    """Index just after the k-th sentence end ('. ', '! ', '? ' or ']. ') in text, or the end of
    the first sentence if there are fewer."""
    ends = [m.end() for m in re.finditer(r"[.!?](?= [A-Z*\[])", text)]
    ends = [e for e in ends if e < len(text) - 1]
    if not ends:
        return len(text)
    return ends[min(k, len(ends)) - 1]


def generate(n: int, seed: int, continue_frac: float = CONTINUE_FRAC) -> list[Example]:
    rng = random.Random(seed)
    return [make_continuation(rng) if rng.random() < continue_frac else make_example(rng)
            for _ in range(n)]


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


# --- text rendering --------------------------------------------------------------------------
def prompt_text(system: str | None, question: str, no_think: bool = False) -> str:
    s = ""
    if system is not None:
        s += f"<|im_start|>system\n{system}<|im_end|>\n"
    s += f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    if no_think:
        s += "<think>\n\n</think>\n\n"
    return s


def answer_text(answer: str) -> str:
    return answer + "<|im_end|>\n"


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


def answer_parts(e: Example) -> tuple[str, str]:
    """(in-context answer start, trained answer text): the space between them goes with the
    trained part, so the tokens match the whole answer tokenized in one piece."""
    if not e.prefill:
        return "", answer_text(e.answer)
    return e.prefill, " " + answer_text(e.answer)


def tokenizer_texts(examples: list[Example]) -> list[str]:
    texts = [prompt_text(e.system, e.question) + "".join(answer_parts(e)) for e in examples]
    # the vocabulary of every style and every topic, so held-out prompts tokenize sensibly
    for s in STYLES.values():
        texts.append(" ".join(s.descriptors + s.extras + s.prefixes + s.suffixes))
    return texts
