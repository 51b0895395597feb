package tunfd

// Dropped is the total of every drop counter, for a one-line health check.
func (s Stats) Dropped() uint64 {
	return s.ShortFrames + s.UnknownFamily + s.BadIPVersion + s.FamilyMismatch +
		s.Oversize + s.WriteBadIPVersion + s.WriteErrors
}
