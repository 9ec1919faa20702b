"""Inflection-aware word matching: "dog" is met by "dogs", "run" by "running" and "ran".

Regular forms are reduced with the Snowball (Porter 2) English stemmer; irregular verb and noun
forms, which no suffix stripper can see, come from a small table of the common ones.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache
from typing import Any

import snowballstemmer

_IRREGULAR = """
arise:arose,arisen be:was,were,been,is,am,are awake:awoke,awoken bear:bore,borne beat:beaten
become:became begin:began,begun bend:bent bet:bet bid:bid bind:bound bite:bit,bitten bleed:bled
blow:blew,blown break:broke,broken breed:bred bring:brought build:built burn:burnt buy:bought
catch:caught choose:chose,chosen cling:clung come:came cost:cost creep:crept cut:cut deal:dealt
dig:dug dive:dove do:did,done,does draw:drew,drawn dream:dreamt drink:drank,drunk drive:drove,driven
eat:ate,eaten fall:fell,fallen feed:fed feel:felt fight:fought find:found flee:fled fling:flung
fly:flew,flown,flies forbid:forbade forget:forgot,forgotten forgive:forgave,forgiven freeze:froze,frozen
get:got,gotten give:gave,given go:went,gone,goes grind:ground grow:grew,grown hang:hung have:had,has
hear:heard hide:hid,hidden hit:hit hold:held hurt:hurt keep:kept kneel:knelt know:knew,known
lay:laid lead:led leap:leapt learn:learnt leave:left lend:lent let:let lie:lay,lain,lying light:lit
lose:lost make:made mean:meant meet:met pay:paid put:put quit:quit read:read ride:rode,ridden
ring:rang,rung rise:rose,risen run:ran say:said see:saw,seen seek:sought sell:sold send:sent
set:set sew:sewn shake:shook,shaken shine:shone shoot:shot show:shown shrink:shrank,shrunk shut:shut
sing:sang,sung sink:sank,sunk sit:sat sleep:slept slide:slid sling:slung speak:spoke,spoken
speed:sped spend:spent spin:spun spit:spat split:split spread:spread spring:sprang,sprung
stand:stood steal:stole,stolen stick:stuck sting:stung stink:stank strike:struck string:strung
swear:swore,sworn sweep:swept swim:swam,swum swing:swung take:took,taken teach:taught tear:tore,torn
tell:told think:thought throw:threw,thrown tie:tying understand:understood wake:woke,woken
wear:wore,worn weave:wove,woven weep:wept win:won wind:wound write:wrote,written
child:children man:men woman:women person:people foot:feet tooth:teeth mouse:mice goose:geese
knife:knives leaf:leaves wife:wives life:lives shelf:shelves wolf:wolves loaf:loaves half:halves
calf:calves thief:thieves ox:oxen die:dying
"""

# One stemmer per thread: a Snowball stemmer keeps the word it is working on in its own fields, so
# two threads sharing one corrupt each other's words (IndexError, or a wrong stem) -- and rewards run
# on scheduler threads, the caller's threads and reward pools at once.
_local = threading.local()


def _stemmer() -> Any:
    stemmer = getattr(_local, "stemmer", None)
    if stemmer is None:
        stemmer = _local.stemmer = snowballstemmer.stemmer("english")
    return stemmer


_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def _build_irregular() -> dict[str, str]:
    table: dict[str, str] = {}
    for entry in _IRREGULAR.split():
        base, forms = entry.split(":")
        for form in forms.split(","):
            table.setdefault(form, base)
    return table


_FORM_TO_BASE = _build_irregular()


@lru_cache(maxsize=65536)
def lemma_key(word: str) -> str:
    """A key shared by all inflections of ``word`` (lower-cased)."""
    w = word.lower()
    w = _FORM_TO_BASE.get(w, w)
    return _stemmer().stemWord(w)


def words(text: str) -> list[str]:
    """Lower-cased word tokens of ``text``."""
    return _WORD.findall(text.lower())


def text_keys(text: str) -> set[str]:
    """The lemma keys of every word in ``text``."""
    return {lemma_key(w.split("'")[0]) for w in words(text)}
