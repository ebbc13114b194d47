"""Process exit codes shared by every subcommand (sysexits.h where one fits)."""

OK = 0
FAILURE = 1
USAGE = 2
NOINPUT = 66  # EX_NOINPUT: an input file is missing or unreadable
CONFIG = 78  # EX_CONFIG: the configuration is invalid; nothing was started
