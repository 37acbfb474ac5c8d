"""Commands that agent harnesses run at their own events (`skillfs hook ...`).

A hook runs inside someone else's session: it writes to the spool (which works whether the
daemon is up or not) and never fails that session.
"""
