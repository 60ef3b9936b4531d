"""HL7 orders for the benchmarks: ORM^O01 v2.3.1 shaped like MAPPING.md §9.1, with realistic random demographics."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

# One station per modality: v2.3.1 has no field naming the station, so radsync schedules an ORM on *every* station
# of its modality. Several stations sharing a modality would multiply the items (and make an accession query answer
# more than once), so each modality gets exactly one station here.
STATIONS: tuple[tuple[str, str], ...] = (
    ("CT01", "CT"),
    ("MR01", "MR"),
    ("US01", "US"),
    ("CR01", "CR"),
    ("DX01", "DX"),
    ("MG01", "MG"),
    ("NM01", "NM"),
    ("PT01", "PT"),
    ("XA01", "XA"),
    ("RF01", "RF"),
)

FAMILIES = (
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Muller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Weber",
    "Meyer",
    "Wagner",
    "Becker",
    "Okafor",
    "Novak",
)
GIVEN_F = (
    "Mary",
    "Patricia",
    "Jennifer",
    "Linda",
    "Elizabeth",
    "Barbara",
    "Susan",
    "Jessica",
    "Sarah",
    "Karen",
)
GIVEN_M = ("James", "Robert", "John", "Michael", "David", "William", "Richard", "Joseph", "Thomas", "Charles")
# Planted for the patient-name wildcard query `Doe*`: no other family name starts with "doe" in any case.
DOE_FAMILIES = ("Doe", "Doe", "Doe", "Doe", "Doering", "Doebler")
PROCEDURES: dict[str, tuple[str, str, str, str, str, str]] = {
    # modality: (ordered code, ordered text, protocol code, protocol text, RP code, RP text)
    "CT": (
        "71250",
        "CT thorax w/o contrast",
        "P-CT-CHEST-NC",
        "Chest routine non-contrast",
        "RP-CTCHEST",
        "CT chest without contrast",
    ),
    "MR": ("70551", "MRI brain w/o contrast", "P-MR-BRAIN", "Brain routine", "RP-MRBRAIN", "MR brain"),
    "US": ("76700", "US abdomen complete", "P-US-ABD", "Abdomen complete", "RP-USABD", "US abdomen"),
    "CR": (
        "71046",
        "X-ray chest 2 views",
        "P-CR-CHEST2",
        "Chest PA and lateral",
        "RP-CRCHEST",
        "Chest X-ray",
    ),
    "DX": ("73030", "X-ray shoulder", "P-DX-SHOULDER", "Shoulder 2 views", "RP-DXSHOULDER", "Shoulder X-ray"),
    "MG": (
        "77067",
        "Screening mammography",
        "P-MG-SCREEN",
        "Bilateral screening",
        "RP-MGSCREEN",
        "Mammography",
    ),
    "NM": (
        "78452",
        "Myocardial perfusion",
        "P-NM-MPI",
        "Rest/stress SPECT",
        "RP-NMMPI",
        "NM myocardial perfusion",
    ),
    "PT": (
        "78815",
        "PET/CT skull base to thigh",
        "P-PT-WB",
        "Whole body FDG",
        "RP-PTWB",
        "PET/CT whole body",
    ),
    "XA": (
        "93458",
        "Coronary angiography",
        "P-XA-CORO",
        "Left heart cath",
        "RP-XACORO",
        "Coronary angiography",
    ),
    "RF": ("74220", "Esophagram", "P-RF-ESO", "Barium swallow", "RP-RFESO", "Fluoroscopy esophagus"),
}


@dataclass(frozen=True)
class Order:
    """One order with one scheduled procedure step: the facts both the HL7 message and the .wl file carry."""

    control_id: str
    patient_id: str
    family: str
    given: str
    birth_date: str
    sex: str
    accession: str
    rp_id: str
    sps_id: str
    placer: str
    filler: str
    modality: str
    station: str
    start: dt.datetime
    study_uid: str
    weight: int

    @property
    def procedure(self) -> tuple[str, str, str, str, str, str]:
        return PROCEDURES.get(
            self.modality,
            (
                "99999",
                f"{self.modality} exam",
                f"P-{self.modality}",
                f"{self.modality} protocol",
                f"RP-{self.modality}",
                f"{self.modality} procedure",
            ),
        )


def make_order(
    rng: random.Random,
    tag: str,
    index: int,
    station: tuple[str, str],
    start: dt.datetime,
    family: str | None = None,
) -> Order:
    """Build one order with IDs unique per (tag, index) and realistic random demographics."""
    sex = rng.choice("FM")
    given = rng.choice(GIVEN_F if sex == "F" else GIVEN_M)
    birth = dt.date(1930, 1, 1) + dt.timedelta(days=rng.randrange(365 * 90))
    key = f"{tag}{index:08d}"
    return Order(
        control_id=f"M{key}",
        patient_id=f"P{key}",
        family=family or rng.choice(FAMILIES),
        given=given,
        birth_date=birth.strftime("%Y%m%d"),
        sex=sex,
        accession=f"A{key}",
        rp_id=f"R{key}",
        sps_id=f"S{key}-1",
        placer=f"PLC-{key}",
        filler=f"FIL-{key}",
        modality=station[1],
        station=station[0],
        start=start,
        study_uid=f"2.25.{rng.getrandbits(127) | (1 << 126)}",
        weight=rng.randrange(40, 120),
    )


def orm_o01(order: Order, sent: dt.datetime) -> bytes:
    """Encode an order as an ORM^O01 v2.3.1 NW message with IHE field positions (MAPPING.md §9.1), CR-separated."""
    code, text, proto_code, proto_text, rp_code, rp_text = order.procedure
    ts = sent.strftime("%Y%m%d%H%M%S")
    start = order.start.strftime("%Y%m%d%H%M%S")
    tq = f"1^once^^{start}^^R"
    ordering = "D1234^Smith^Robert^^^Dr"
    segments = (
        f"MSH|^~\\&|HIS_ORD|GENHOSP|RIS_HUB|RADDEPT|{ts}||ORM^O01|{order.control_id}|P|2.3.1",
        f"PID|1||{order.patient_id}^^^GENHOSP^MR||{order.family}^{order.given}||{order.birth_date}|{order.sex}"
        f"|||12 Harbour Rd^^Springfield^^12345^USA|||||||ACCT{order.patient_id}^^^GENHOSP^AN",
        f"PV1|1|O|RADOPD^X1^^GENHOSP||||{ordering}|R5678^Jones^Alice^^^Dr^MD|||||||||||V{order.patient_id}"
        f"^^^GENHOSP^VN",
        f"ORC|NW|{order.placer}^HIS_ORD|{order.filler}^RIS_HUB||SC||{tq}||{ts}|||{ordering}|||||RAD^Radiology^99ORG",
        f"OBR|1|{order.placer}^HIS_ORD|{order.filler}^RIS_HUB|{code}^{text}^C4^{proto_code}^{proto_text}^99RADPROT"
        f"||||||||Claustrophobic|Persistent cough 6 weeks|||{ordering}||{order.accession}|{order.rp_id}"
        f"|{order.sps_id}||||{order.modality}|||{tq}|||WALK|R05^Cough^I10|||T001&Brown&Kim||||||||||"
        f"{rp_code}^{rp_text}^99RADPROC",
        f"OBX|1|NM|29463-7^Body weight^LN||{order.weight}|kg|||||F",
        f"ZDS|{order.study_uid}^RIS_HUB^Application^DICOM",
    )
    return ("\r".join(segments) + "\r").encode("ascii")


def ingest_orders(count: int, tag: str, seed: int, today: dt.date) -> list[Order]:
    """`count` orders spread over all stations, starting within a week of today (for the ingest benchmark)."""
    rng = random.Random(f"{seed}-{tag}")
    orders = []
    for i in range(count):
        day = today + dt.timedelta(days=rng.randrange(-1, 7))
        start = dt.datetime.combine(day, dt.time(rng.randrange(7, 19), rng.choice((0, 15, 30, 45))))
        orders.append(make_order(rng, tag, i, rng.choice(STATIONS), start))
    return orders
