"""An SMTP sink for tests: aiosmtpd hands each message to this handler, which writes it to a
directory (one .eml file per message, renamed into place so a reader never sees half a file).

    PYTHONPATH=tests/python python3 -m aiosmtpd -n -l 127.0.0.1:PORT -c mail_sink.MailDir DIR
"""

import itertools
import os
import tempfile

_counter = itertools.count()


class MailDir:
    def __init__(self, directory):
        self.directory = directory

    @classmethod
    def from_cli(cls, parser, *args):
        if len(args) != 1:
            parser.error("mail_sink.MailDir takes one argument: the directory to write messages to")
        return cls(args[0])

    async def handle_DATA(self, server, session, envelope):
        envelope_lines = "X-Envelope-From: {}\r\nX-Envelope-To: {}\r\n".format(
            envelope.mail_from, ",".join(envelope.rcpt_tos)
        )
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".incoming-")
        with os.fdopen(fd, "wb") as f:
            f.write(envelope_lines.encode("ascii"))
            f.write(envelope.original_content or envelope.content)
        name = "{:06d}.eml".format(next(_counter))
        os.rename(tmp, os.path.join(self.directory, name))
        return "250 2.0.0 Ok: queued as {}".format(name)
