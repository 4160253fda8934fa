"""Survey linkage and targeting: indicators, rankings, the accountability ladder, priorities.

The survey (安全感测评) is measured from outside; this package turns its results and raw
responses into figures with their uncertainty, ranks townships the way the county is judged,
applies the accountability ladder, and joins the survey to the grid metrics of the same areas
and quarters so a poor score can be traced to what happens on the ground.
"""
