"""Host and process tuning shared by the faces: idle polling, huge pages.

Nothing here changes what Peregrine computes, only how fast the host runs it;
every piece can be switched off by a setting.
"""
