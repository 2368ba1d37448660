"""twistd plugin: ``twistd phaserlink --config site.ini``.

Kept to a few lines on purpose: twistd imports every module in
twisted/plugins/ to list plugins, so the real work lives in phaserlink.tap
and is imported only when the plugin is chosen.
"""

from twisted.application.service import ServiceMaker

phaserlink = ServiceMaker(
    "PhaserLink",
    "phaserlink.tap",
    "Print by email: SMTP relay, POP3 store and printer retriever",
    "phaserlink",
)
