"""Outbound HL7 v2.5.1: the messages radsync sends to the RIS (ORU^R01 results, ORM^O01 order status).

``wire.Hl7Wire`` implements the ``app.outbound.MessageWire`` port; ``fields`` escapes and assembles values,
``segments`` builds the segments both messages share (MSH, PID, PV1, ORC, OBR, the Study UID OBX).
"""
