"""Sample HL7 messages: MAPPING.md §9.1-9.5 verbatim, and the FIELD-NOTES A-G edge cases built from them.

Messages are ``str`` with CR segment terminators; encode them as their MSH-18 says (9.3 is ISO 8859-1 bytes).
"""

from __future__ import annotations


def msg(*segments: str) -> str:
    """Segments joined with CR, CR-terminated, as on the wire inside MLLP."""
    return "\r".join(segments) + "\r"


def segments_of(message: str) -> list[str]:
    return [s for s in message.split("\r") if s]


def with_segment(message: str, segment: str, *, occurrence: int = 1) -> str:
    """``message`` with its n-th segment of the same name replaced by ``segment``."""
    out, seen = [], 0
    for s in segments_of(message):
        if s[:3] == segment[:3]:
            seen += 1
            if seen == occurrence:
                s = segment
        out.append(s)
    return msg(*out)


def with_field(message: str, name: str, n: int, value: str, *, occurrence: int = 1) -> str:
    """``message`` with field ``name``-``n`` set to ``value`` (MSH numbering: MSH-3 is the third field)."""
    seen = 0
    for s in segments_of(message):
        if s[:3] == name:
            seen += 1
            if seen == occurrence:
                fields = s.split("|")
                index = n - 1 if name == "MSH" else n
                fields += [""] * (index + 1 - len(fields))
                fields[index] = value
                return with_segment(message, "|".join(fields), occurrence=occurrence)
    raise KeyError(name)


def without(message: str, name: str) -> str:
    return msg(*(s for s in segments_of(message) if s[:3] != name))


def appended(message: str, *segments: str) -> str:
    return msg(*segments_of(message), *segments)


# MAPPING.md §9.1: ORM^O01 v2.3.1 – new order (NW/SC) with ZDS
ORM_NEW_9_1 = msg(
    'MSH|^~\\&|HIS_ORD|GENHOSP|RIS_HUB|RADDEPT|20240611093015||ORM^O01|MSG00001|P|2.3.1',
    'PID|1||100234567^^^GENHOSP^MR||Doe^Jane^Marie^^Mrs||19700412|F|||12 Harbour Rd^^Springfield^^12345^USA|||||||ACC778899^^^GENHOSP^AN',
    'PV1|1|O|RADOPD^X1^^GENHOSP||||D1234^Smith^Robert^^^Dr|R5678^Jones^Alice^^^Dr^MD|||||||||||V99887766^^^GENHOSP^VN',
    'ORC|NW|PLC-0001^HIS_ORD|FIL-55501^RIS_HUB||SC||1^once^^20240612083000^^R||20240611093010|||D1234^Smith^Robert^^^Dr|||||RAD^Radiology^99ORG',
    'OBR|1|PLC-0001^HIS_ORD|FIL-55501^RIS_HUB|71250^CT thorax w/o contrast^C4^P-CT-CHEST-NC^Chest routine non-contrast^99RADPROT||||||||Claustrophobic|Persistent cough 6 weeks|||D1234^Smith^Robert^^^Dr||A2024061100017|RP00017|SPS00017-1||||CT|||1^once^^20240612083000^^R|||WALK|R05^Cough^I10|||T001&Brown&Kim||||||||||RP-CTCHEST^CT chest without contrast^99RADPROC',
    'OBX|1|NM|29463-7^Body weight^LN||72|kg|||||F',
    'ZDS|2.25.186720139475620031884613650946921155417^RIS_HUB^Application^DICOM',
)

# MAPPING.md §9.2: OMI^O23 v2.5.1 – STAT order with escape sequences and two protocol codes for one SPS
OMI_STAT_9_2 = msg(
    'MSH|^~\\&|RIS|RADDEPT|MWL_HUB|RADDEPT|20240611101500+0200||OMI^O23^OMI_O23|MSG00002|P|2.5.1',
    'PID|1||200345678^^^GENHOSP&2.16.840.1.113883.3.9999.1&ISO^MR||Okafor^Chidi^^^Mr||19851103|M',
    'PV1|1|E|ED^BAY3^1^GENHOSP|||||R7001^Novak^Petra^^^Dr|||||||||||V99887800^^^GENHOSP^VN',
    'ORC|NW|PLC-0002^ED_ORD|FIL-55502^RIS||SC||||20240611101000+0200|||R7001^Novak^Petra^^^Dr',
    'TQ1|1||||||20240611110000+0200||S^Stat^HL70485',
    'OBR|1|PLC-0002^ED_ORD|FIL-55502^RIS|74177^CT abdomen and pelvis with contrast^C4|||||||||Fall from ladder \\T\\ blunt trauma; GCS 14\\S\\15; r/o liver laceration \\F\\ splenic injury; side: left\\E\\right unclear|||R7001^Novak^Petra^^^Dr||A2024061100018|RP00018|SPS00018-1||||CT||||||CART|^Blunt abdominal trauma|||||||||||||RP-CTAP-C^CT abdomen/pelvis with IV contrast^99RADPROC',
    'NTE|1|P|\\H\\Metformin:\\N\\ hold 48 h after contrast.\\.br\\No known contrast allergy.',
    'IPC|A2024061100018^RIS|RP00018|2.25.293019484725108836640194876501392281374|SPS00018-1|CT^Computed Tomography^DCM|P-CT-AP-ART^Abdomen arterial phase^99RADPROT|CT2|RAD-CT-ROOM2|CT2SCANNER',
    'IPC|A2024061100018^RIS|RP00018|2.25.293019484725108836640194876501392281374|SPS00018-1|CT^Computed Tomography^DCM|P-CT-AP-PV^Abdomen portal venous phase^99RADPROT|CT2|RAD-CT-ROOM2|CT2SCANNER',
)

# MAPPING.md §9.3: ORM^O01 v2.3.1 – change/reschedule (XO/SC), Latin-1 (MSH-18 = 8859/1); send as ISO 8859-1 bytes
ORM_CHANGE_LATIN1_9_3 = msg(
    'MSH|^~\\&|HIS_ORD|KLINIKUM|RIS_HUB|RADDEPT|20240611113000||ORM^O01|MSG00003|P|2.3.1|||||DEU|8859/1',
    'PID|1||300456789^^^KLINIKUM^MR||Müller^Jürgen^^^Dr||19581225|M',
    'PV1|1|I|STATION7^712^2^KLINIKUM|||||H3344^Größer^Annegret^^^Dr|||||||||||F2024-77812^^^KLINIKUM^VN',
    'ORC|XO|PLC-0003^HIS_ORD|FIL-55503^RIS_HUB||SC||1^once^^20240613091500^^R||20240611112955|||H3344^Größer^Annegret^^^Dr',
    'OBR|1|PLC-0003^HIS_ORD|FIL-55503^RIS_HUB|MRKNL^MRT Knie links^99HISORD^P-MR-KNEE-L^Knie links Standard^99RADPROT|||||||||Z.n. Distorsion, Schwellung|||H3344^Größer^Annegret^^^Dr||A2024061100019|RP00019|SPS00019-1||||MR|||1^once^^20240613091500^^R|||||||||||||||||RP-MRKNEE-L^MRT Kniegelenk links^99RADPROC',
    'ZDS|2.25.62941572028363650381712085533761041923^RIS_HUB^Application^DICOM',
)

# MAPPING.md §9.4: OMI^O23 v2.5.1 – Japanese name, UTF-8 (MSH-18 = UNICODE UTF-8)
OMI_JAPANESE_UTF8_9_4 = msg(
    'MSH|^~\\&|RIS|TOKYOHOSP|MWL_HUB|RADDEPT|20240611140000+0900||OMI^O23^OMI_O23|MSG00004|P|2.5.1|||||JPN|UNICODE UTF-8',
    'PID|1||0012345678^^^TOKYOHOSP^MR||Yamada^Taro^^^^^L^A~山田^太郎^^^^^L^I~やまだ^たろう^^^^^L^P||19800101|M',
    'PV1|1|O|RADIO^^^TOKYOHOSP||||||||||||||||V5550001^^^TOKYOHOSP^VN',
    'ORC|NW|PLC-0004^HIS|FIL-55504^RIS||SC||||20240611135900+0900',
    'TQ1|1||||||20240612100000+0900||R^Routine^HL70485',
    'OBR|1|PLC-0004^HIS|FIL-55504^RIS|CR-CHEST-PA^胸部単純X線 正面^99HISORD||||||||||||D0707^Suzuki^Hanako||A2024061100020|RP00020|||||CR||||||||||||||||||||RP-CXR-PA^胸部X線 PA^99RADPROC',
    'IPC|A2024061100020^RIS|RP00020|2.25.101318877064208839126893391470542930610|SPS00020-1|CR^Computed Radiography^DCM|P-CXR-PA^胸部 PA^99RADPROT|CR1|XRAY-ROOM1|CR1_AE',
)

# MAPPING.md §9.5: ORM^O01 v2.3.1 – cancel (CA/CA)
ORM_CANCEL_9_5 = msg(
    'MSH|^~\\&|HIS_ORD|GENHOSP|RIS_HUB|RADDEPT|20240611150000||ORM^O01|MSG00005|P|2.3.1',
    'PID|1||100234567^^^GENHOSP^MR||Doe^Jane^Marie^^Mrs||19700412|F',
    'PV1|1|O|RADOPD^X1^^GENHOSP||||||||||||||||V99887766^^^GENHOSP^VN',
    'ORC|CA|PLC-0001^HIS_ORD|FIL-55501^RIS_HUB||CA||||20240611145955|||||||PATREF^Patient refused^99CANCEL',
    'OBR|1|PLC-0001^HIS_ORD|FIL-55501^RIS_HUB|71250^CT thorax w/o contrast^C4^P-CT-CHEST-NC^Chest routine non-contrast^99RADPROT||||||||||||||A2024061100017|RP00017|SPS00017-1||||CT',
    'ZDS|2.25.186720139475620031884613650946921155417^RIS_HUB^Application^DICOM',
)

ORM_CHANGE_LATIN1_9_3_BYTES = ORM_CHANGE_LATIN1_9_3.encode("latin-1")
OMI_JAPANESE_UTF8_9_4_BYTES = OMI_JAPANESE_UTF8_9_4.encode("utf-8")

MAPPING_SAMPLES = {
    "9.1": ORM_NEW_9_1.encode("ascii"),
    "9.2": OMI_STAT_9_2.encode("ascii"),
    "9.3": ORM_CHANGE_LATIN1_9_3_BYTES,
    "9.4": OMI_JAPANESE_UTF8_9_4_BYTES,
    "9.5": ORM_CANCEL_9_5.encode("ascii"),
}

# -- A. framing and segment terminators ------------------------------------------------------------------

A1_LF_TERMINATED = ORM_NEW_9_1.replace("\r", "\n")
A1_CRLF_TERMINATED = ORM_NEW_9_1.replace("\r", "\r\n")
# A2: a LF inside NTE-3 text of a CR-terminated message is data, not a segment break
A2_LF_IN_NTE = appended(ORM_NEW_9_1, "NTE|1|P|first line\nsecond line", "ZXX|unknown z-segment is ignored")
# A5: BOM and whitespace before MSH, trailing field separators, v2.7 truncation character in MSH-2
A5_BOM = "\ufeff  " + ORM_NEW_9_1
A5_TRAILING_PIPES = msg(*(s + "||" for s in segments_of(ORM_NEW_9_1)))
A5_TRUNCATION_CHAR = ORM_NEW_9_1.replace("MSH|^~\\&|", "MSH|^~\\&#|", 1)

# -- B. escapes, delimiters, repetitions -----------------------------------------------------------------

B8_T_ESCAPE = with_field(ORM_NEW_9_1, "PID", 5, "JOHNSON \\T\\ JOHNSON^MARY")
B9_S_IN_NAME = with_field(ORM_NEW_9_1, "PID", 5, "O\\S\\NEIL^PAT")
B10_ESCAPES_EVERYWHERE = with_field(
    with_field(
        with_field(ORM_NEW_9_1, "PID", 5, "Smith\\F\\Jones^Ann\\R\\Marie^^^^Dr\\E\\Prof"),
        "OBR", 4, "71250^CT thorax \\F\\ lungs^C4^P-CT^Chest\\E\\lung^99RADPROT",
    ),
    "OBR", 31, "R05^Cough \\E\\ fever^I10",
)
B11_BACKSLASH_NAME = with_field(ORM_NEW_9_1, "PID", 5, "^\\")
B11_INVALID_ESCAPE = with_field(ORM_NEW_9_1, "OBR", 13, "BSV 4\\5")
B12_HEX_AND_FORMATTING = appended(
    with_field(ORM_NEW_9_1, "PID", 5, "Gar\\X00E7\\on^Ren\\XE9\\"),
    "NTE|1|P|\\H\\Note:\\N\\ tab\\E\\X09\\E\\ kept\\.br\\next line",
)
B13_NAME_TYPES = with_field(ORM_NEW_9_1, "PID", 5, "SMYTHE^JON^^^^^A~SMITH^JOHN^^^^^L")
B14_XPN_ORDER = with_field(ORM_NEW_9_1, "PID", 5, "DOE^JOHN^Q^JR^DR^PHD")
B15_PID3_REPETITIONS = with_field(ORM_NEW_9_1, "PID", 3, '123^^^HOSP^MR~999^^^NAT^NN~""^^^^PRC')
B16_IPC9_STATIONS = with_field(OMI_STAT_9_2, "IPC", 9, "AET1~AET2")
# B17: two SPS in one OMI (two ORC/TQ1/OBR/IPC groups) and one SPS from two ORM pairs sharing OBR-20
B17_OMI_TWO_GROUPS = msg(
    *segments_of(OMI_STAT_9_2),
    "ORC|NW|PLC-0002^ED_ORD|FIL-55502^RIS||SC||||20240611101000+0200",
    "TQ1|1||||||20240611120000+0200||R^Routine^HL70485",
    "OBR|2|PLC-0002^ED_ORD|FIL-55502^RIS|74177^CT abdomen and pelvis with contrast^C4||||||||||||||A2024061100018"
    "|RP00018|SPS00018-2||||CT",
    "IPC|A2024061100018^RIS|RP00018|2.25.293019484725108836640194876501392281374|SPS00018-2|CT^Computed Tomography"
    "^DCM|P-CT-AP-LATE^Abdomen late phase^99RADPROT|CT2|RAD-CT-ROOM2|CT2SCANNER",
)
B17_ORM_SHARED_SPS = msg(
    *segments_of(ORM_NEW_9_1)[:-1],
    "ORC|NW|PLC-0001^HIS_ORD|FIL-55501^RIS_HUB||SC||1^once^^20240612083000^^R||20240611093010",
    "OBR|2|PLC-0001^HIS_ORD|FIL-55501^RIS_HUB|71250^CT thorax w/o contrast^C4^P-CT-CHEST-LD^Chest low dose^99RADPROT"
    "||||||||||||||A2024061100017|RP00017|SPS00017-1||||CT|||1^once^^20240612083000^^R",
    segments_of(ORM_NEW_9_1)[-1],
)
B17_ORM_TWO_SPS = B17_ORM_SHARED_SPS.replace("RP00017|SPS00017-1||||CT|||1^once^^20240612083000^^R\rZDS",
                                             "RP00017|SPS00017-2||||CT|||1^once^^20240612083000^^R\rZDS")
B18_UNKNOWN_Z_SEGMENT = appended(ORM_NEW_9_1, "ZXY|whatever^we^do^not^know")

# -- C. character sets -----------------------------------------------------------------------------------

def with_charset(message: str, msh18: str) -> str:
    fields = segments_of(message)[0].split("|")
    fields += [""] * (18 - len(fields))
    fields[17] = msh18
    return with_segment(message, "|".join(fields))


C_NAME = "Müller^Zoë"
C_BASE = with_field(ORM_NEW_9_1, "PID", 5, C_NAME)
C19_CHARSETS = {  # MSH-18 → (codec the bytes are written in, name expected after decoding)
    "8859/1": ("latin-1", "Müller^Zoë"),
    "UNICODE UTF-8": ("utf-8", "Müller^Zoë"),
    "UTF-8": ("utf-8", "Müller^Zoë"),
    "Windows-1252": ("cp1252", "Müller^Zoë"),
    "8859/15": ("iso8859-15", "Müller^Zoë"),
    "ISO IR87": ("iso2022_jp", "山田^太郎"),
    "GB 18030-2000": ("gb18030", "王^小明"),
    "KS X 1001": ("euc_kr", "김^민준"),
}
C20_LATIN1_WITHOUT_MSH18 = C_BASE.encode("latin-1")  # no MSH-18: not UTF-8 → fallback charset (cp1252)
C20_UTF8_WITHOUT_MSH18 = C_BASE.encode("utf-8")
C_UNKNOWN_CHARSET = with_charset(ORM_NEW_9_1, "KLINGON-1")
C_REPEATED_CHARSET = with_charset(ORM_NEW_9_1, "8859/1~ISO IR87")
C_INVALID_UTF8 = with_charset(C_BASE, "UNICODE UTF-8").encode("latin-1")

# -- E. identifiers ----------------------------------------------------------------------------------------

E33_NO_ACCESSION = with_field(ORM_NEW_9_1, "OBR", 18, "")
E34_LONG_ACCESSION = with_field(ORM_NEW_9_1, "OBR", 18, "A20240611000170001")  # 18 > SH 16
E35_PADDED_PATIENT_ID = with_field(ORM_NEW_9_1, "PID", 3, "     P1058^^^GENHOSP^MR")
E39_BAD_STUDY_UID = with_field(ORM_NEW_9_1, "ZDS", 1, "2.25.0123^RIS_HUB^Application^DICOM")
E39_LONG_STUDY_UID = with_field(ORM_NEW_9_1, "ZDS", 1, "2.25." + "1" * 61)
E_NO_PID3 = with_field(ORM_NEW_9_1, "PID", 3, "")
E_TABLE_0074_MODALITY = with_field(ORM_NEW_9_1, "OBR", 24, "RAD")
E_LOWERCASE_MODALITY = with_field(ORM_NEW_9_1, "OBR", 24, "ct")

# -- F. order lifecycle ------------------------------------------------------------------------------------


def order_control(message: str, orc1: str, orc5: str, control_id: str) -> str:
    """``message`` (an ORM or OMI) with ORC-1/ORC-5 set on every ORC and a new MSH-10."""
    out = with_field(message, "MSH", 10, control_id)
    count = sum(1 for s in segments_of(message) if s.startswith("ORC|"))
    for n in range(1, count + 1):
        out = with_field(with_field(out, "ORC", 1, orc1, occurrence=n), "ORC", 5, orc5, occurrence=n)
    return out


F41_XO_EMPTY_STATUS = order_control(ORM_NEW_9_1, "XO", "", "MSG-XO-NULL")
F41_NW_IN_PROGRESS = order_control(ORM_NEW_9_1, "NW", "IP", "MSG-NW-IP")
F41_SC_IN_PROGRESS = order_control(ORM_NEW_9_1, "SC", "IP", "MSG-SC-IP")
F41_SC_COMPLETED = order_control(ORM_NEW_9_1, "SC", "CM", "MSG-SC-CM")
F41_DC_CA = order_control(ORM_NEW_9_1, "DC", "CA", "MSG-DC-CA")
F41_OC = order_control(ORM_NEW_9_1, "OC", "", "MSG-OC")
F41_UNKNOWN_PAIR = order_control(ORM_NEW_9_1, "XO", "ZZ", "MSG-XO-ZZ")
F42_CANCEL_UNKNOWN = with_field(with_field(ORM_CANCEL_9_5, "ORC", 3, "FIL-55599^RIS_HUB"), "OBR", 18, "A-UNKNOWN")
F42_CANCEL_UNKNOWN = with_field(with_field(F42_CANCEL_UNKNOWN, "OBR", 3, "FIL-55599^RIS_HUB"), "ORC", 2, "PLC-9999^X")
F42_CANCEL_UNKNOWN = with_field(F42_CANCEL_UNKNOWN, "OBR", 2, "PLC-9999^X")
F45_XO_NEW_MODALITY = with_field(order_control(ORM_NEW_9_1, "XO", "SC", "MSG-XO-MR"), "OBR", 24, "MR")

# -- patient updates ---------------------------------------------------------------------------------------

ADT_A08 = msg(
    "MSH|^~\\&|ADT|GENHOSP|RIS_HUB|RADDEPT|20240611120000||ADT^A08^ADT_A01|ADT00001|P|2.5.1",
    "EVN|A08|20240611115959",
    "PID|1||100234567^^^GENHOSP^MR||Doe^Janet^Marie^^Mrs||19700413|F",
    "PV1|1|O",
)
ADT_A40 = msg(
    "MSH|^~\\&|ADT|GENHOSP|MWL_HUB|RADDEPT|20240611160000||ADT^A40^ADT_A39|MSG00006|P|2.5.1",
    "EVN||20240611155958",
    "PID|1||100234999^^^GENHOSP^MR||Rossi^Maria^^^Ms||19920730|F",
    "MRG|TMP-0042^^^GENHOSP^MR||||||Trauma^Female^Unknown",
)
ADT_A45 = msg(  # move visit information: an ADT event radsync does not take
    "MSH|^~\\&|ADT|GENHOSP|MWL_HUB|RADDEPT|20240611160000||ADT^A45^ADT_A45|MSG00016|P|2.5.1",
    "EVN||20240611155958",
    "PID|1||100234999^^^GENHOSP^MR||Rossi^Maria^^^Ms||19920730|F",
)
ADT_A40_NO_MRG = msg(
    "MSH|^~\\&|ADT|GENHOSP|MWL_HUB|RADDEPT|20240611160000||ADT^A40^ADT_A39|MSG00017|P|2.5.1",
    "EVN||20240611155958",
    "PID|1||100234999^^^GENHOSP^MR||Rossi^Maria^^^Ms||19920730|F",
)
ORU_R01 = msg(
    "MSH|^~\\&|REPORTING|RADDEPT|MWL_HUB|RADDEPT|20240612163000||ORU^R01^ORU_R01|MSG00008|P|2.5.1",
    "PID|1||100234567^^^GENHOSP^MR||Doe^Jane^Marie^^Mrs||19700412|F",
)
SIU_S12 = msg(  # scheduling: a message type radsync does not take
    "MSH|^~\\&|SCHED|GENHOSP|MWL_HUB|RADDEPT|20240612163000||SIU^S12^SIU_S12|MSG00009|P|2.5.1",
    "SCH|1",
    "PID|1||100234567^^^GENHOSP^MR||Doe^Jane^Marie^^Mrs||19700412|F",
)
